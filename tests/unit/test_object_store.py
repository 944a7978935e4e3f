"""The local object store: a put is atomic, also when writers of one key race."""

import threading

from resources.object_store import ObjectStoreResource


def test_concurrent_writers_of_one_key_all_succeed_and_one_whole_value_wins(tmp_path):
    store = ObjectStoreResource(kind="local", root=str(tmp_path))
    payloads = [bytes([i]) * 1_000_000 for i in range(6)]
    errors = []

    def write(i):
        try:
            for _ in range(5):
                store.put_bytes("models/scores.bin", payloads[i])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_bytes("models/scores.bin") in payloads
    assert store.list_keys() == ["models/scores.bin"]  # no temporary file left behind or listed
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["scores.bin"]
    assert (tmp_path / "models" / "scores.bin").stat().st_mode & 0o777 == 0o644
