import json
import stat

import pytest

from brainseg_utils.runtime.io import atomic_write, atomic_write_json, canonical_sha256


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"b": 1, "a": 2})
    assert json.loads(p.read_text()) == {"a": 2, "b": 1}
    assert stat.S_IMODE(p.stat().st_mode) == 0o644

    def failing(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(p, failing)
    assert json.loads(p.read_text()) == {"a": 2, "b": 1}, "old content survives a failed write"
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"], "no temp file left"


def test_canonical_sha256_ignores_key_order():
    assert canonical_sha256({"a": 1, "b": [1, 2]}) == canonical_sha256({"b": [1, 2], "a": 1})
    assert canonical_sha256({"a": 1}) != canonical_sha256({"a": 2})


def test_atomic_write_fsyncs_file_before_rename_and_folder_after(tmp_path, monkeypatch):
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os,
        "fsync",
        lambda fd: (
            events.append(
                (
                    "fsync",
                    os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
                    if os.path.exists(f"/proc/self/fd/{fd}")
                    else "?",
                )
            ),
            real_fsync(fd),
        )[1],
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("replace", os.path.basename(b))), real_replace(a, b))[1]
    )
    atomic_write(tmp_path / "x.bin", lambda tmp: open(tmp, "wb").write(b"data"))
    kinds = [e[0] for e in events]
    assert kinds.index("fsync") < kinds.index("replace") < len(kinds) - 1 and kinds[-1] == "fsync"
    if events[-1][1] != "?":
        assert events[-1][1] == tmp_path.name, "the folder is fsynced after the rename"


def test_remove_stale_temps_only_touches_named_temp_files(tmp_path):
    from brainseg_utils.runtime.io import remove_stale_temps

    keep = [tmp_path / "last.pt", tmp_path / ".other.tmp", tmp_path / ".last.pt.notes"]
    stale = [tmp_path / ".last.pt.abc123.tmp", tmp_path / ".history.json.x9.tmp", tmp_path / ".best.pt.q.tmp.gz"]
    for p in keep + stale:
        p.write_bytes(b"x")
    removed = remove_stale_temps(tmp_path, ["best.pt", "last.pt", "history.json"])
    assert sorted(removed) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temps(tmp_path / "missing", ["last.pt"]) == []
