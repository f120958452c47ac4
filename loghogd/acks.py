"""Acknowledged delivery (protocol 1.1): which records each client_id has had handled.

The journal in the workdir gets, for every loop pass that handled
acknowledged records, an intent (each log file's size before and after the
pass's write, and the sequence numbers in it) before the log files are
written, and a commit mark after. At start-up, a last intent without its
commit is checked against the files: a file that holds all its bytes is
kept, one cut short is truncated back to where the pass began, and only the
sequence numbers of complete files count as handled. A client resends what
was not acknowledged, so each record is written exactly once whatever moment
a kill -9 hits. The journal's lines and their recovery are in
loghogd/ackjournalfile.py.

Only records that were accepted (written to a file) move a client's marks.
A rejected record (bad signature, unknown app, a client id bound to
another application) is acknowledged to the connection that sent it alone,
so that the client stops resending it, and is never journaled: a forged
frame cannot make a real client's next records count as duplicates. A
client id is bound to the owner that created it (the application, and the
secret when its facility is signed): records under another owner are
rejected. When `max_clients` ids are known, a new one evicts the least
recently seen ids of the owner that holds the most, so only accepted
traffic of the largest owner, never rejected traffic, can push a mark out.

A file that cannot be written (disk full) keeps its lines in the writer's
memory buffer, and its records are not handled yet: the commit mark names
it, its sequence numbers ride along into the next pass's intent, and no ACK
covers them until a write lands. Lines the full buffer had to drop are owed:
the client is disconnected so that it resends them, and they are written
when they come back.
"""

import collections
import itertools
import time
from typing import Callable, Counter, Dict, List, Optional, Tuple

from loghogd.ackjournalfile import JournalFile, recover_marks
from loghogd.ackmarks import (ClientMark, Ranges, add_range, add_to_ranges, in_ranges, owner_app,
                              remove_from_ranges)
from loghogd.config import ServerConfig
from loghogd.logfile import LogFile

IDLE_SECONDS = 7 * 86400
EVICT_SHARE = 10
COMPACT_BYTES = 8 * 1024 * 1024
JOURNAL_NAME = 'ack-journal'


class AckJournal:
    """Marks per client_id, and the journal that makes them survive a crash."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time, logdir: Optional[str] = None,
                 max_clients: int = ServerConfig.max_ack_clients) -> None:
        self.max_clients = max_clients
        self.clock = clock
        self.marks: Dict[str, ClientMark] = recover_marks(path, logdir)
        self.owners: Counter[str] = collections.Counter()
        self._files: Dict[LogFile, Dict[str, Ranges]] = {}
        self._drops_at_intent: Dict[LogFile, int] = {}
        self._rejected: Dict[object, Tuple[str, int]] = {}
        self._owed: Dict[str, Ranges] = {}
        self._handled: Dict[str, Ranges] = {}
        self._streaming: Dict[str, Ranges] = {}
        self._caps: Dict[str, int] = {}
        self._intent_journaled = True
        self._file = JournalFile(path)
        self._compact()

    # what the processor asks -------------------------------------------------

    def is_duplicate(self, client_id: str, seq: int) -> bool:
        mark = self.marks.get(client_id)
        if mark is None or not mark.handled(seq):
            return False
        return client_id not in self._owed or not in_ranges(self._owed[client_id], seq)

    def may_use(self, client_id: str, owner: str) -> bool:
        """False when `client_id` belongs to another application or secret."""
        mark = self.marks.get(client_id)
        return mark is None or mark.owner in ('', owner)

    def seq_to_ack(self, client_id: str, connection: object = None) -> int:
        """The seq an ACK to `client_id` carries: the highest handled, below any record still waiting for the disk.

        Not the high-water mark --status shows (the highest handled, `ack_high_water`).

        On the `connection` that sent rejected records of `client_id`, the
        highest of those counts as handled too (for that connection only).
        """
        mark = self.marks.get(client_id)
        high = mark.high if mark is not None else 0
        rejected = self._rejected.get(connection)
        if rejected is not None and rejected[0] == client_id:
            high = max(high, rejected[1])
        cap = self._caps.get(client_id)
        return high if cap is None else min(high, cap)

    def note_rejected(self, connection: object, client_id: str, seq: int) -> None:
        """`seq` was rejected: acknowledge it on `connection`, record it nowhere else."""
        rejected = self._rejected.get(connection)
        if rejected is None or rejected[0] != client_id or rejected[1] < seq:
            self._rejected[connection] = (client_id, seq)

    def forget_connection(self, connection: object) -> None:
        self._rejected.pop(connection, None)

    def waiting_for_disk(self, client_id: str) -> bool:
        """Some records of `client_id` are held or owed: its ACK is due once they are written."""
        return client_id in self._caps

    def takes_fresh_run(self, client_id: str, first: int, owner: str) -> bool:
        """Whether `client_id` may use seqs from `first` up and none is handled or owed: note(.., last) applies."""
        mark = self.marks.get(client_id)
        return mark is None or (first > mark.high and mark.owner in ('', owner) and client_id not in self._owed)

    def note(self, client_id: str, seq: int, logfile: Optional[LogFile], owner: str, last: int = 0) -> int:
        """`seq` (to `last`, after takes_fresh_run()) was accepted and queued for `logfile` (None: handled
        without a file, e.g. forwarded). Returns how many client ids were evicted for it.
        """
        evicted = 0
        mark = self.marks.get(client_id)
        if mark is None:
            if len(self.marks) >= self.max_clients:
                evicted = self._evict()
            mark = self.marks[client_id] = ClientMark(owner=owner)
            self.owners[owner] += 1
        else:
            if not mark.owner:
                self._bind(mark, owner)
            if next(reversed(self.marks)) != client_id:
                self.marks[client_id] = self.marks.pop(client_id)
        last = max(seq, last)
        mark.add(last)
        mark.seen = self.clock()
        owed = self._owed.get(client_id)
        if owed is not None and in_ranges(owed, seq):
            remove_from_ranges(owed, seq)
            if not owed:
                del self._owed[client_id]
        group = self._files.setdefault(logfile, {}) if logfile is not None else self._handled
        add_to_ranges(group.setdefault(client_id, []), seq, last)
        return evicted

    def hold(self, client_id: str, seq: int) -> None:
        """`seq` waits for the stream (forwarded, JetStream has not acknowledged it): no ACK covers it yet."""
        add_range(self._streaming.setdefault(client_id, []), seq, seq)

    def release(self, client_id: str, seq: int) -> bool:
        """JetStream has `seq`; True when the client's acknowledgement may now move on."""
        held = self._streaming.get(client_id)
        if held is None or not in_ranges(held, seq):
            return False
        remove_from_ranges(held, seq)
        if not held:
            del self._streaming[client_id]
        return True

    def refresh_caps(self) -> None:
        """After releases: what each client may be acknowledged up to."""
        self._caps = self._acknowledgeable()

    def expect_redelivery(self, client_id: str, first: int, last: int) -> None:
        """A stream consumer's `first`..`last` went to an earlier run and may come again, out of order.

        The ones above the highest handled were not handled: they stay so
        (as gaps) however high later records take the mark, which a snapshot
        makes survive a crash.
        """
        mark = self.marks.get(client_id)
        if mark is None:
            mark = self.marks[client_id] = ClientMark(owner=client_id, seen=self.clock())
            self.owners[client_id] += 1
        if last <= mark.high:
            return
        mark.gaps.update(range(max(first, mark.high + 1), last + 1))
        mark.high = last
        self._compact()

    def _bind(self, mark: ClientMark, owner: str) -> None:
        self.owners[mark.owner] -= 1
        mark.owner = owner
        self.owners[owner] += 1

    def status(self, shown: int) -> Dict[str, object]:
        """A bounded summary for --status: how many ids per application, the `shown` most recent marks.

        `marks` is kept in the order clients were last seen, so this costs
        `shown` steps however many clients there are.
        """
        recent = itertools.islice(reversed(self.marks.items()), shown)
        by_app: Counter[str] = collections.Counter()
        for owner, count in self.owners.items():
            if count:
                by_app[owner_app(owner) or '(not yet bound)'] += count
        return {'ack_clients': len(self.marks), 'ack_clients_by_app': dict(by_app),
                'ack_high_water': {client_id: mark.high for client_id, mark in recent}}

    # around the writer's flush -----------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._files or self._handled)

    def write_intent(self) -> None:
        """Before the pass's lines are written: where they go and what they hold.

        Staging a file can rotate it: a write that would take it past
        max_size rotates it first (the writer's on_full), so the offsets are
        those of the file the lines will go to.
        """
        files = {}
        sync = False
        for logfile, ranges in self._files.items():
            try:
                before, after = logfile.stage()
            except OSError:
                continue
            files[logfile.path] = [before, after, ranges]
            sync = sync or logfile.facility.sync
        self._drops_at_intent = {logfile: logfile.drops for logfile in self._files}
        owners = {client_id: self.marks[client_id].owner for ranges in self._files.values() for client_id in ranges
                  if client_id in self.marks}
        owners.update((client_id, self.marks[client_id].owner) for client_id in self._handled
                      if client_id in self.marks)
        record = {'time': self.clock(), 'files': files, 'handled': self._handled, 'owners': owners}
        self._intent_journaled = self._file.append_intent(record, sync)

    def commit(self) -> List[str]:
        """After the pass's write: the intent holds for every file written in full.

        The commit mark names the files that were not: one still holding
        lines keeps its records for the next pass; the records of one whose
        held lines were dropped become owed. Returns the client ids with
        newly owed records, which must resend them.
        """
        sync = any(logfile.facility.sync for logfile in self._files)
        waiting: Dict[LogFile, Dict[str, Ranges]] = {}
        unwritten: List[str] = []
        dropped: List[str] = []
        journaled = self._intent_journaled
        for logfile, ranges in self._files.items():
            if self._dropped_since_intent(logfile):
                for client_id, seqs in ranges.items():
                    owed = self._owed.setdefault(client_id, [])
                    for first, last in seqs:
                        add_range(owed, first, last)
                    dropped.append(client_id)
            elif logfile.pending or logfile.unwritten or not journaled:
                waiting[logfile] = ranges
            else:
                continue
            unwritten.append(logfile.path)
        if journaled and not self._file.append_commit(unwritten, sync):
            waiting = {logfile: ranges for logfile, ranges in self._files.items()
                       if not self._dropped_since_intent(logfile)}
        elif journaled:
            self._handled = {}
        self._files = waiting
        if self._caps or waiting or dropped or self._handled or self._streaming:
            self._caps = self._acknowledgeable()
        if self._file.size > COMPACT_BYTES and not self._caps:
            self._compact()
        return dropped

    def _dropped_since_intent(self, logfile: LogFile) -> bool:
        return logfile.drops != self._drops_at_intent.get(logfile, logfile.drops)

    def _acknowledgeable(self) -> Dict[str, int]:
        """Per client with records held or owed, the highest seq below all of them."""
        lowest: Dict[str, int] = {}
        for group in [*self._files.values(), self._handled, self._owed, self._streaming]:
            for client_id, ranges in group.items():
                first = min(first for first, _last in ranges)
                lowest[client_id] = min(lowest.get(client_id, first), first)
        return {client_id: first - 1 for client_id, first in lowest.items()}

    def close(self) -> None:
        self._file.close()

    # forgetting clients --------------------------------------------------------

    def _compact(self) -> None:
        """Rewrite the journal as one snapshot, forgetting long-idle clients."""
        horizon = self.clock() - IDLE_SECONDS
        self.marks = {client_id: mark for client_id, mark in self.marks.items() if mark.seen >= horizon}
        self.owners = collections.Counter(mark.owner for mark in self.marks.values())
        self._file.write_snapshot(self.marks)

    def _evict(self) -> int:
        """Forget the least recently seen tenth of the ids of the owner that holds the most."""
        owner = max(self.owners, key=self.owners.__getitem__)
        ids = (client_id for client_id, mark in self.marks.items() if mark.owner == owner)
        oldest = list(itertools.islice(ids, self.owners[owner] // EVICT_SHARE or 1))
        for client_id in oldest:
            del self.marks[client_id]
        self.owners[owner] -= len(oldest)
        return len(oldest)

