"""One table for the whole run: each figure per server, and loghogd's ratios.

Figures are medians over the repetitions; the sequence check comes from
the one repetition that reads the whole output back. The table, its notes
and the profile are printed and written to the results directory.
"""

import json
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import pyspy
from benchmarks.loads import ALL_SERVERS, CLASSIC, COOKBOOK, IDLE, LOADS_BY_NAME, LOGHOGD, RSYSLOG, TCP, TLS, UDP

Metric = Tuple[str, str, str]
"""(key in a run's figures, label in the table, format)."""

TRAFFIC_METRICS: Tuple[Metric, ...] = (
    ('records_per_s', 'records/s', 'rate'),
    ('delivered_pct', 'delivered %', 'pct'),
    ('cpu_per_million', 'CPU s per 1M records', 'seconds'),
    ('peak_rss_mib', 'peak RSS MiB', 'mib'),
)
UDP_METRICS: Tuple[Metric, ...] = (
    ('kernel_drops', 'kernel UDP drops (socket)', 'int'),
)
ACK_METRICS: Tuple[Metric, ...] = (
    ('acked_pct', 'acknowledged %', 'pct'),
)
IDLE_METRICS: Tuple[Metric, ...] = (
    ('idle_rss_mib', 'RSS MiB, idle connections open', 'mib'),
    ('base_rss_mib', 'RSS MiB before connecting', 'mib'),
)
RATIO_KEYS = ('records_per_s', 'cpu_per_million', 'peak_rss_mib', 'idle_rss_mib')
CEILING_KEYS = ('records_per_s', 'cpu_per_million')
HEADERS = ('load', 'figure') + ALL_SERVERS + ('loghogd/rsyslog', 'loghogd/cookbook', 'loghogd/ceiling')


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def format_value(value: Any, style: str) -> str:
    if value is None:
        return '-'
    if isinstance(value, str):
        return value
    if style == 'rate':
        return '{:,.0f}'.format(value)
    if style == 'pct':
        return '%.2f' % value if value < 100 else '100'
    if style == 'seconds':
        return '%.2f' % value
    if style == 'mib':
        return '%.1f' % value
    if style == 'int':
        return '%d' % value
    return str(value)


def ratio(numerator: Optional[float], denominator: Optional[float]) -> str:
    if numerator is None or not denominator:
        return '-'
    return '%.2fx' % (numerator / denominator)


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """load -> server -> figure -> median (numbers) or text (check, errors)."""
    grouped: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    for run in runs:
        grouped.setdefault(run['load'], {}).setdefault(run['server'], []).append(run)
    summary: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for load, by_server in grouped.items():
        for server, server_runs in by_server.items():
            figures: Dict[str, Any] = {}
            keys = {key for run in server_runs for key, value in run['figures'].items()
                    if isinstance(value, (int, float))}
            for key in keys:
                figures[key] = median([run['figures'][key] for run in server_runs
                                       if isinstance(run['figures'].get(key), (int, float))])
            checks = [run['figures']['sequence_check'] for run in server_runs if 'sequence_check' in run['figures']]
            if checks:
                figures['sequence_check'] = checks[0]
            errors = [run['error'] for run in server_runs if run.get('error')]
            if errors:
                figures['errors'] = errors
            figures['repetitions'] = len(server_runs) - len(errors)
            summary.setdefault(load, {})[server] = figures
    return summary


def metrics_for(load_name: str) -> Tuple[Metric, ...]:
    load = LOADS_BY_NAME.get(load_name)
    if load is not None and load.transport == IDLE:
        return IDLE_METRICS
    metrics = TRAFFIC_METRICS + (('sequence_check', 'sequence check (1 rep)', 'text'),)
    if load is not None and load.transport == UDP:
        metrics += UDP_METRICS
    if load is not None and load.ack:
        metrics += ACK_METRICS
    return metrics


def summarize_ceiling(runs: List[Dict[str, float]]) -> Dict[str, Optional[float]]:
    return {key: median([run[key] for run in runs]) for key in CEILING_KEYS}


def table_rows(summary: Dict[str, Dict[str, Dict[str, Any]]], ceiling: Dict[str, Optional[float]],
               skipped: Dict[Tuple[str, str], str]) -> List[List[str]]:
    rows = [['ceiling', label + ' (pure-Python loop)', format_value(ceiling.get(key), style), '', '', '', '', '']
            for key, label, style in TRAFFIC_METRICS if key in CEILING_KEYS]
    for load_name, by_server in summary.items():
        for key, label, style in metrics_for(load_name):
            cells = [load_name, label]
            for server in ALL_SERVERS:
                if server in by_server:
                    figures = by_server[server]
                    value = figures.get(key)
                    if value is None and figures.get('errors'):
                        value = 'error'
                    cells.append(format_value(value, style))
                elif (load_name, server) in skipped:
                    cells.append('skipped')
                else:
                    cells.append('')
            mine = by_server.get(LOGHOGD, {}).get(key)
            if key in RATIO_KEYS:
                cells.append(ratio(mine, by_server.get(RSYSLOG, {}).get(key)))
                cells.append(ratio(mine, by_server.get(COOKBOOK, {}).get(key)))
            else:
                cells += ['', '']
            cells.append(ratio(mine, ceiling.get(key)) if key in CEILING_KEYS else '')
            rows.append(cells)
    return rows


def render_text(rows: List[List[str]]) -> str:
    widths = [max(len(str(row[column])) for row in [list(HEADERS)] + rows) for column in range(len(HEADERS))]
    lines = []
    for index, row in enumerate([list(HEADERS)] + rows):
        lines.append('  '.join(cell.ljust(width) if column < 2 else cell.rjust(width)
                               for column, (cell, width) in enumerate(zip(row, widths))).rstrip())
        if index == 0:
            lines.append('  '.join('-' * width for width in widths))
    return '\n'.join(lines)


def render_markdown(rows: List[List[str]]) -> str:
    lines = ['| ' + ' | '.join(HEADERS) + ' |', '|' + '---|' * 2 + '---:|' * (len(HEADERS) - 2)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


def notes(summary: Dict[str, Dict[str, Dict[str, Any]]], runs: List[Dict[str, Any]],
          skipped: Dict[Tuple[str, str], str], meta: Dict[str, Any]) -> List[str]:
    """The context a reader needs for the table: N, repetitions, skips and errors."""
    lines = ['records: %(records)s per TCP/TLS load, %(udp_records)s per UDP load, cookbook at most '
             '%(cookbook_records)s; median of %(repetitions)s repetition(s); loads and servers interleaved' % meta,
             '%(cpus)s CPUs, Python %(python)s, batches and version 1 frames decoded with %(batch_decoder)s, '
             'zlib inflated with %(inflater)s, '
             'load average %(loadavg_before).1f before and '
             '%(loadavg_after).1f after the run (other work on the machine skews records/s, '
             'less so CPU s per 1M)' % meta]
    for load_name in summary:
        load = LOADS_BY_NAME.get(load_name)
        if load is not None and load.note:
            lines.append('%s: %s' % (load_name, load.note))
    for (load_name, server), reason in sorted(skipped.items()):
        lines.append('%s / %s skipped: %s' % (load_name, server, reason))
    for load_name, by_server in summary.items():
        for server, figures in by_server.items():
            for error in figures.get('errors', []):
                lines.append('%s / %s error: %s' % (load_name, server, error))
    lines += cost_notes(summary)
    lines += ['%s / %s #%d LOST RECORDS over a stream: %s'
              % (run['load'], run['server'], run['repetition'] + 1, run['problem'])
              for run in stream_losses(runs)]
    return lines


def cost_notes(summary: Dict[str, Dict[str, Dict[str, Any]]]) -> List[str]:
    """What TLS, zlib, signing, acknowledgement and a line format cost loghogd against
    plain TCP (classic lines) at the same C, from the same run."""
    lines = []
    for load_name, by_server in summary.items():
        load = LOADS_BY_NAME.get(load_name)
        if load is None or load.transport not in (TCP, TLS) or not (
                load.transport == TLS or load.compress or load.signed or load.ack or load.line_format != CLASSIC):
            continue
        mine = by_server.get(LOGHOGD, {})
        baseline = '%s-c%d' % ('batch' if load.batch else 'tcp', load.connections)
        plain = summary.get(baseline, {}).get(LOGHOGD, {})
        if not all(isinstance(figures.get(key), (int, float)) for figures in (mine, plain) for key in CEILING_KEYS) \
                or not all(plain[key] > 0 for key in CEILING_KEYS):
            continue
        lines.append('%s costs loghogd %+.2f CPU s per 1M records (%.2fx) and runs at %.2fx the records/s '
                     'of %s' % (load_name, mine['cpu_per_million'] - plain['cpu_per_million'],
                                mine['cpu_per_million'] / plain['cpu_per_million'],
                                mine['records_per_s'] / plain['records_per_s'], baseline))
    return lines


def stream_losses(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """TCP and TLS must deliver every record exactly once; the runs where they did not, with why."""
    losses = []
    for run in runs:
        load = LOADS_BY_NAME.get(run['load'])
        figures = run.get('figures', {})
        if load is None or load.transport not in (TCP, TLS) or 'delivered_pct' not in figures:
            continue
        check = figures.get('sequence_check', 'exact')
        if figures['delivered_pct'] < 100.0 or check != 'exact':
            losses.append(dict(run, problem='%.2f%% delivered, sequence check: %s'
                                            % (figures['delivered_pct'], check)))
    return losses


def write_results(directory: str, stamp: str, document: Dict[str, Any], text: str, markdown: str) -> str:
    """JSON with every run plus the Markdown table; returns the JSON path."""
    os.makedirs(directory, exist_ok=True)
    json_path = os.path.join(directory, 'bench-%s.json' % stamp)
    with open(json_path, 'w') as output:
        json.dump(document, output, indent=2, sort_keys=True)
    with open(os.path.join(directory, 'bench-%s.md' % stamp), 'w') as output:
        output.write(markdown + '\n')
    with open(os.path.join(directory, 'bench-%s.txt' % stamp), 'w') as output:
        output.write(text + '\n')
    return json_path


def publish(results_dir: str, runs: List[Dict[str, Any]], ceiling_runs: List[Dict[str, float]],
            skipped: Dict[Tuple[str, str], str], profile: Optional[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    """Print the table with its notes (and the profile), and write them to the results directory."""
    summary = summarize(runs)
    rows = table_rows(summary, summarize_ceiling(ceiling_runs), skipped)
    lines = notes(summary, runs, skipped, meta)
    text = render_text(rows) + '\n\n' + '\n'.join(lines)
    markdown = render_markdown(rows) + '\n\n' + '\n'.join('- ' + line for line in lines)
    if profile is not None:
        text += '\n\n' + pyspy.render(profile)
        markdown += '\n\n```\n' + pyspy.render(profile) + '\n```'
    document = {'meta': meta, 'ceiling': ceiling_runs, 'summary': summary,
                'runs': runs, 'profile': profile,
                'skipped': ['%s/%s: %s' % (load, server, reason)
                            for (load, server), reason in skipped.items()]}
    path = write_results(results_dir, meta['started'], document, text, markdown)
    print(text)
    print('\nresults: %s' % path)
