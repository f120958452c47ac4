"""safefs: below a trusted directory no link is followed and only regular files of one name are opened."""

import os

import pytest

from loghogd import safefs

FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / 'log'
    outside = tmp_path / 'outside'
    root.mkdir()
    outside.mkdir()
    (outside / 'target').write_bytes(b'kept\n')
    return root, outside


def refused(root, path, flags=FLAGS):
    with pytest.raises(safefs.UnsafePath) as caught:
        os.close(safefs.open_file(str(root), str(path), flags, create_mode=0o750))
    return caught.value.strerror


def test_missing_directories_and_file_are_made_below_the_root(tree):
    root, _outside = tree
    fd = safefs.open_file(str(root), str(root / 'app' / 'sub' / 'x.log'), FLAGS, create_mode=0o750)
    os.write(fd, b'line\n')
    os.close(fd)
    assert (root / 'app' / 'sub' / 'x.log').read_bytes() == b'line\n'


def test_a_linked_file_a_linked_directory_a_fifo_and_a_hard_link_are_refused(tree):
    root, outside = tree
    (root / 'app').mkdir()
    os.symlink(outside / 'target', root / 'app' / 'file.log')
    os.symlink(outside, root / 'linked')
    os.mkfifo(root / 'app' / 'fifo.log')
    os.link(outside / 'target', root / 'app' / 'hard.log')
    assert 'is a symbolic link where a regular file belongs' in refused(root, root / 'app' / 'file.log')
    assert 'is a symbolic link where a directory belongs' in refused(root, root / 'linked' / 'new.log')
    assert 'is a special file' in refused(root, root / 'app' / 'fifo.log', os.O_RDONLY)
    assert 'hard links' in refused(root, root / 'app' / 'hard.log')
    assert os.listdir(outside) == ['target'] and (outside / 'target').read_bytes() == b'kept\n'


def test_a_path_outside_the_root_trusts_its_directory_but_not_its_last_component(tree):
    root, outside = tree
    os.close(safefs.open_file(str(root), str(outside / 'own.log'), FLAGS))
    os.symlink(outside / 'target', outside / 'link.log')
    refused(root, outside / 'link.log')
    assert not safefs.beneath(str(root), str(outside / 'own.log'))
    assert safefs.beneath(str(root), str(root / 'app' / 'x.log'))
    assert not safefs.beneath(str(root), str(root / '..' / 'outside' / 'target'))


def test_rename_refuses_a_link_and_moves_a_regular_file(tree):
    root, outside = tree
    (root / 'app').mkdir()
    (root / 'app' / 'x.log').write_bytes(b'x\n')
    os.symlink(outside / 'target', root / 'app' / 'y.log')
    safefs.rename_file(str(root), str(root / 'app' / 'x.log'), str(root / 'app' / 'x.log.1'))
    with pytest.raises(safefs.UnsafePath):
        safefs.rename_file(str(root), str(root / 'app' / 'y.log'), str(root / 'app' / 'y.log.1'))
    assert sorted(os.listdir(root / 'app')) == ['x.log.1', 'y.log']
