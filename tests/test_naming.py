"""Recording id → file name: inside out_dir, distinct, stable, valid on every file system."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from siro_data import naming
from siro_data.naming import file_stem, url_extension

WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])$", re.IGNORECASE)
#: Forbidden in Windows file names (and "/" everywhere): <>:"/\|?* and the controls 0-31.
WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
EXTENSIONS = ["m4a", "mp3", "wav", "flac", "ogg", "opus", "webm"]

#: Ids as hostile as they come: traversal, separators, NUL and controls, reserved device
#: names (with extensions, any case), dots and spaces at the ends, case twins, long ones.
HOSTILE = st.sampled_from(
    [
        "",
        ".",
        "..",
        "...",
        "../",
        "..\\",
        "/",
        "\\",
        "\x00",
        " ",
        "CON",
        "con",
        "Con.txt",
        "nul.m4a",
        "PRN",
        "aux",
        "COM1",
        "lpt9",
        "COM¹",
        "~",
        "-",
        ":",
        "*",
        "?",
        '"',
        "<",
        ">",
        "|",
        "\t",
        "\x7f",
        "\u202e",
        "Abc",
        "abc",
        "ß",
        "SS",
        "ﬁ",
    ]
)
IDS = st.one_of(
    st.text(),  # any unicode but lone surrogates, control characters included
    st.text(st.characters(codec="ascii"), max_size=40),
    st.lists(st.one_of(HOSTILE, st.text(max_size=4)), max_size=12).map("".join),
    st.text(min_size=250, max_size=2000),  # far over any file system's limit
    st.tuples(HOSTILE, st.sampled_from(["", ".", " ", ". ", "/..", "\\..", ".m4a"])).map("".join),
)


def file_name(recording_id: str, extension: str = "m4a") -> str:
    """The whole file name a recording is stored under, as ``fetch_all`` builds it."""
    return f"{file_stem(recording_id)}.{extension}"


def assert_portable(name: str) -> None:
    """A stem as siro_data makes it: short, plain ASCII, not hidden, no option look-alike."""
    assert 0 < len(name.encode("utf-8")) <= 100
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
    assert not WINDOWS_RESERVED.match(name.split(".")[0])
    assert not name.startswith((".", "-"))  # hidden files, or read as a command option
    assert not name.endswith((".", " "))


def assert_valid_everywhere(name: str) -> None:
    """What every common file system (ext4, APFS, NTFS, FAT32/exFAT) accepts as a name."""
    assert name not in ("", ".", ".."), name
    assert len(name.encode("utf-8")) <= 255, name
    assert len(name.encode("utf-16-le")) // 2 <= 255, name
    assert not WINDOWS_FORBIDDEN.search(name), name
    assert not name.endswith((".", " ")), name
    # Windows reserves the device names whatever follows the first dot, in any case.
    assert not WINDOWS_RESERVED.match(name.split(".")[0].rstrip(" ")), name


def folded(name: str) -> str:
    """A name as case-insensitive, normalising file systems (NTFS, APFS) compare it."""
    return unicodedata.normalize("NFKC", name).casefold()


@given(st.text(min_size=0, max_size=400))
def test_any_id_maps_to_a_portable_name_inside_the_folder(recording_id):
    stem = file_stem(recording_id)
    assert_portable(stem)
    base = Path("/out")
    assert (base / f"{stem}.m4a").parent == base
    assert file_stem(recording_id) == stem  # stable


@given(IDS, st.sampled_from(EXTENSIONS))
@settings(max_examples=300)
def test_a_hostile_id_names_a_file_inside_out_dir_valid_on_every_file_system(recording_id, ext):
    name = file_name(recording_id, ext)
    assert_valid_everywhere(name)
    assert_portable(file_stem(recording_id))
    with tempfile.TemporaryDirectory() as folder:
        out_dir = Path(folder, "out")
        out_dir.mkdir()
        target = out_dir / name
        assert target.resolve().parent == out_dir.resolve()
        target.write_bytes(b"x")  # the OS takes it, and it lands in out_dir, nowhere else
        assert [p.name for p in Path(folder).rglob("*") if p.is_file()] == [name]


@given(st.lists(st.text(max_size=60), min_size=2, max_size=30, unique=True))
def test_distinct_ids_never_share_a_file_even_case_insensitively(ids):
    stems = [file_stem(i).lower() for i in ids]
    assert len(set(stems)) == len(ids)


@given(st.lists(IDS, min_size=1, max_size=20, unique=True))
def test_distinct_hostile_ids_and_their_case_twins_never_share_a_file(ids):
    """Twins differing only by case or normalisation (Abc/abc, ß/SS, ﬁ/fi) stay apart too."""
    variants = {
        variant
        for recording_id in ids
        for variant in (
            recording_id,
            recording_id.upper(),
            recording_id.lower(),
            recording_id.swapcase(),
            recording_id.casefold(),
            unicodedata.normalize("NFKD", recording_id),
        )
    }
    names = {folded(file_name(recording_id)) for recording_id in variants}
    assert len(names) == len(variants)


#: id → file stem, pinned: changing the mapping would orphan every file fetched before.
KNOWN_STEMS = {
    "rec_8fKq2": "rec_8fKq2-1df149119ab79e97",
    "../../etc/passwd": "etc_passwd-3754d6cb3a38e118",
    "Abc": "Abc-06d90109c8cce34e",
    "abc": "abc-ba7816bf8f01cfea",
    "CON": "CON-a3dbc4b644a9a2c5",
    "con.txt": "con_txt-d3bde286fd271ed6",
    "LPT9.m4a": "LPT9_m4a-19f66358401dd6bd",
    "": "id-e3b0c44298fc1c14",
    "..": "id-5ec1f7e700f37c3d",
    "a/b": "a_b-c14cddc033f64b9d",
    "a\\b": "a_b-c62016d0f8ee3333",
    "\x00": "id-6e340b9cffb37a98",
    "name. ": "name-70a65d9b94bd69d6",
    "straße": "stra_e-787f4770613d3824",
    "日本語の録音": "id-14640c7cfb60ca43",
    "x" * 300: "x" * 48 + "-0d4e2ca9e9cbced7",
    "-rf": "rf-686c39acd6327bbd",
    'a:b*c?d"e<f>g|h': "a_b_c_d_e_f_g_h-cc2608f9b6f3c570",
}


def test_known_names_are_stable_across_releases():
    """Changing the mapping would orphan every file fetched before: pin it."""
    assert {i: file_stem(i) for i in KNOWN_STEMS} == KNOWN_STEMS
    assert file_stem("Abc") != file_stem("abc")
    assert file_stem("CON").startswith("CON-")
    assert file_stem("").startswith("id-")
    assert file_stem("..").startswith("id-")


def test_names_are_the_same_in_a_fresh_process():
    """No per-process state (hash seed, locale) enters a name."""
    # naming.py alone, by path: the package's heavy imports add nothing to this question.
    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('naming', sys.argv[1])\n"
        "naming = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(naming)\n"
        "print(json.dumps({i: naming.file_stem(i) for i in json.load(sys.stdin)}))"
    )
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "LC_ALL": "C"}
        result = subprocess.run(
            [sys.executable, "-c", code, naming.__file__],
            input=json.dumps(list(KNOWN_STEMS)),
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert json.loads(result.stdout) == KNOWN_STEMS


def test_extension_comes_from_the_url_path_only():
    assert url_extension("https://s/b/x/audio.m4a?X-Goog-Signature=a.mp3") == "m4a"
    assert url_extension("https://s/b/x/audio.WAV") == "wav"
    assert url_extension("https://s/b/x/audio.%2E%2E%2Fevil") == "m4a"
    assert url_extension("https://s/b/x/noext") == "m4a"
    assert url_extension("https://s/b/x/a.toolongext") == "m4a"


@given(st.text(), st.text())
def test_any_url_yields_a_plain_extension(path, query):
    """Whatever the storage's URL holds, the extension adds nothing unsafe to the name."""
    url = f"https://storage.example/{path}?{query}"
    extension = url_extension(url)
    assert re.fullmatch(r"[a-z0-9]{1,5}", extension)
    assert_valid_everywhere(file_name("CON", extension))
