"""Objects by name: ``put_object(prefix, value, name=...)`` gives a stable key another process
can read with ``podrun.latest(key)``, and a get of that ref downloads only what the on-disk
cache lacks. flamepy's version 0 still means "fetch fresh"."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import podrun

from .conftest import run_python

MB = 1_000_000


def test_a_chosen_name_is_refused_when_taken_unless_the_version_read_is_given():
    ref = podrun.put_object("_default/models", {"w": 1}, name="detector")
    assert ref == podrun.ObjectRef("_default/models/detector", 1)
    with pytest.raises(podrun.Conflict, match="if_version=1"):
        podrun.put_object("_default/models", {"w": 2}, name="detector")
    assert podrun.put_object("_default/models", {"w": 2}, name="detector", if_version=1).version == 2
    with pytest.raises(podrun.Conflict):  # a stale version: someone wrote meanwhile
        podrun.put_object("_default/models", {"w": 3}, name="detector", if_version=1)
    with pytest.raises(podrun.Conflict):
        podrun.put_object("_default/models", {"w": 3}, name="detector", if_version=0)  # 0: "must not exist"
    assert podrun.get_object(podrun.latest("_default/models/detector")) == {"w": 2}
    assert podrun.put_object("_default/models", 5, name="fresh", if_version=0).version == 1


def test_bad_names_and_arguments_are_usage_errors():
    with pytest.raises(podrun.InvalidKey):
        podrun.put_object("_default/models", 1, name="a/b")
    with pytest.raises(podrun.UsageError, match="needs name="):
        podrun.put_object("_default/models", 1, if_version=1)
    with pytest.raises(podrun.InvalidKey, match="full key"):
        podrun.latest("_default/models")
    with pytest.raises(podrun.NotFound):
        podrun.latest("_default/models/never-written")


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_any_name_is_a_key_or_an_invalid_key(name):
    try:
        key = podrun.ObjectKey("_default", "names", name)
    except podrun.InvalidKey:
        with pytest.raises(podrun.InvalidKey):
            podrun.put_object("_default/names", 1, name=name)
        return
    ref = podrun.put_object("_default/names", name, name=name, if_version=podrun.latest(str(key)).version
                            if _exists(str(key)) else None)
    assert podrun.get_object(podrun.latest(ref.key)) == name


def _exists(key):
    try:
        podrun.latest(key)
    except podrun.NotFound:
        return False
    return True


def test_another_process_finds_the_object_by_name_and_the_cache_saves_the_download(podrun_home):
    payload = os.urandom(2 * MB)
    podrun.put_object("_default/shared", payload, name="blob")
    shutil.rmtree(podrun_home / "object-cache")  # the writer's cached copy: gone, so the reader starts empty
    reader = ("import podrun, sys; ref = podrun.latest('_default/shared/blob'); "
              "value = podrun.get_object(ref); print(ref.version, len(value), podrun.stats()['bytes_down'])")
    first = run_python(reader)
    assert first.returncode == 0, first.stderr
    version, size, down = map(int, first.stdout.split())
    assert (version, size) == (1, 2 * MB) and down >= 2 * MB  # a new reader's empty cache: one full download

    again = run_python(reader)  # the on-disk cache is shared between processes of one PODRUN_HOME
    assert again.returncode == 0, again.stderr
    assert int(again.stdout.split()[2]) < 10_000

    writer = run_python("import podrun; ref = podrun.latest('_default/shared/blob'); v = podrun.get_object(ref); "
                        "podrun.update_object(ref, v[:-4] + b'tail')")
    assert writer.returncode == 0, writer.stderr
    podrun.reset_stats()
    newest = podrun.latest("_default/shared/blob")
    assert newest.version == 2
    assert podrun.get_object(newest) == payload[:-4] + b"tail"
    assert podrun.stats()["bytes_down"] < MB  # a delta against the cached version, not the object


def test_version_zero_still_fetches_fresh_in_full():
    payload = os.urandom(MB)
    ref = podrun.put_object("_default/shared", payload, name="fresh")
    podrun.reset_stats()
    assert podrun.get_object(podrun.ObjectRef(ref.key, 0)) == payload
    assert podrun.stats()["bytes_down"] >= MB
