"""Fixtures of the privilege tests: a real unprivileged account and a loghogd it can run."""

import os
import shutil

import pytest

from tests.support import accounts


@pytest.fixture(scope='session')
def test_user():
    if os.geteuid() != 0:
        pytest.skip('dropping privileges needs root; this test runs as uid %d' % os.geteuid())
    return accounts.ensure_test_user()


@pytest.fixture
def open_directory():
    """A directory the dropped user can reach (pytest's tmp_path sits under a 0700 one)."""
    directory = accounts.open_directory()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope='session')
def user_loghogd(test_user):
    """(command prefix, environment) with which the test user runs this checkout's loghogd."""
    directory = accounts.open_directory()
    yield accounts.loghogd_for(test_user, directory)
    shutil.rmtree(directory, ignore_errors=True)
