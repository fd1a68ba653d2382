import json
import stat

import pytest

from brainseg_utils.io import atomic_write, atomic_write_json, canonical_sha256


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
