"""Demo assets are written once, even when every rank of a fresh launch asks for them at the same time."""
import json
import multiprocessing as mp


def _make(root, queue):
    from sa2va.demo import make_demo_assets

    queue.put(make_demo_assets(root, seed=0, num_images=6))


def test_concurrent_first_use_writes_one_consistent_set(tmp_path):
    root = str(tmp_path / "assets")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_make, args=(root, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    marker = json.loads((tmp_path / "assets" / "demo_assets.json").read_text())
    assert marker["paths"] == results[0] and marker["args"] == {"version": 3, "seed": 0, "num_images": 6}
    assert (tmp_path / "assets" / "tiny_internvl" / "config.json").is_file()


def test_a_second_process_waits_for_the_writer(tmp_path):
    """While one process holds the assets lock (i.e. is writing), another does not read a half-written set."""
    import fcntl

    root = tmp_path / "assets"
    root.mkdir()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = ctx.Process(target=_make, args=(str(root), queue))
        p.start()
        p.join(timeout=8)
        assert p.is_alive(), "make_demo_assets did not wait for the lock"
        assert not (root / "demo_assets.json").exists()
    assert queue.get(timeout=300)["internvl"].endswith("tiny_internvl")
    p.join(timeout=60)
    assert p.exitcode == 0
