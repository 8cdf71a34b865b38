"""Recording id → file name: inside out_dir, distinct, stable, valid on every file system."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from siro_data.naming import file_stem, url_extension

WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)


def assert_portable(name: str) -> None:
    assert 0 < len(name.encode("utf-8")) <= 100
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
    assert not WINDOWS_RESERVED.match(name)
    assert not name.startswith((".", "-"))  # hidden files, or read as a command option
    assert not name.endswith((".", " "))


@given(st.text(min_size=0, max_size=400))
def test_any_id_maps_to_a_portable_name_inside_the_folder(recording_id):
    stem = file_stem(recording_id)
    assert_portable(stem)
    base = Path("/out")
    assert (base / f"{stem}.m4a").parent == base
    assert file_stem(recording_id) == stem  # stable


@given(st.lists(st.text(max_size=60), min_size=2, max_size=30, unique=True))
def test_distinct_ids_never_share_a_file_even_case_insensitively(ids):
    stems = [file_stem(i).lower() for i in ids]
    assert len(set(stems)) == len(ids)


def test_known_names_are_stable_across_releases():
    """Changing the mapping would orphan every file fetched before: pin it."""
    assert file_stem("rec_8fKq2") == "rec_8fKq2-1df149119ab79e97"
    assert file_stem("../../etc/passwd") == "etc_passwd-3754d6cb3a38e118"
    assert file_stem("Abc") != file_stem("abc")
    assert file_stem("CON").startswith("CON-")
    assert file_stem("").startswith("id-")
    assert file_stem("..").startswith("id-")


def test_extension_comes_from_the_url_path_only():
    assert url_extension("https://s/b/x/audio.m4a?X-Goog-Signature=a.mp3") == "m4a"
    assert url_extension("https://s/b/x/audio.WAV") == "wav"
    assert url_extension("https://s/b/x/audio.%2E%2E%2Fevil") == "m4a"
    assert url_extension("https://s/b/x/noext") == "m4a"
    assert url_extension("https://s/b/x/a.toolongext") == "m4a"
