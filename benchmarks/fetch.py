"""Fetcher throughput against `curl -o`, and bytes sent twice on resume.

    python benchmarks/fetch.py [--size-mb 512] [--runs 3]

Serves a file of random bytes (made in a temp dir, deleted after) from the test suite's
file server on 127.0.0.1, downloads it with curl and with `voice-fetch`, and prints:
- throughput of each (best of N runs, whole process: start-up and the fetcher's fsync
  included) and the ratio fetcher / curl (goal >= 0.8);
- bytes the server sent twice when the connection is cut half-way (goal 0), and bytes
  re-hashed from disk (goal 0: within one process the hasher holds them, a new process
  continues from the hash state saved beside the .part).

Run it with PYTHONPATH pointing at another checkout's contracts/ and engines/ to measure
that code against curl in the same conditions (before/after).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fetch"))

from fileserver import FileServer  # noqa: E402

FETCH = Path(sys.executable).with_name("voice-fetch")


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 << 20))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def fetch_env(url: str, sha: str, dest: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FETCH_", "KUBERNETES_"))}
    env.update(
        FETCH_ASSET="bench",
        FETCH_NAMESPACE="default",
        FETCH_VERSION="v1",
        FETCH_DEST=str(dest),
        FETCH_FILES=json.dumps([{"url": url, "sha256": sha, "path": "model.bin"}]),
        FETCH_REPORT="log",
        FETCH_BACKOFF_MAX="0.2",
    )
    return env


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    # Start each run with no dirty pages left by the one before.
    os.sync()
    began = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - began


def hash_and_fsync(path: Path, sha: str) -> float:
    """What the fetcher does beyond curl -o: verify the digest, make the file durable."""
    began = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
        os.fsync(f.fileno())
    assert digest.hexdigest() == sha
    return time.perf_counter() - began


def rehashed(stderr: str) -> int:
    for line in stderr.splitlines():
        msg = json.loads(line).get("msg", "")
        if msg.startswith("re-hashed "):
            return int(msg.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--link-mbps", type=float, default=200.0, help="paced server, MB/s")
    args = parser.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is needed: apt-get install -y curl")
    size = args.size_mb << 20

    with tempfile.TemporaryDirectory(prefix="fetch-bench-") as tmp:
        work = Path(tmp)
        source = work / "model.bin"
        sha = make_file(source, size)
        with FileServer() as server:
            url = server.add("model.bin", source)
            cut_url = server.add("cut.bin", source, cut_after=size // 2, cut_times=1)
            kill_url = server.add("slow.bin", source, rate=size / 4)

            curl_s, verify_s, fetch_s = [], [], []
            for run in range(args.runs):
                out = work / f"curl-{run}"
                curl_s.append(timed(["curl", "-sS", "-o", str(out), url]))
                verify_s.append(hash_and_fsync(out, sha))
                out.unlink()
                dest = work / f"fetch-{run}"
                fetch_s.append(timed([str(FETCH)], fetch_env(url, sha, dest)))
                shutil.rmtree(dest)

            # A link slower than the disk and the hash, as from outside the cluster.
            paced_url = server.add("paced.bin", source, rate=args.link_mbps * 1e6)
            out = work / "curl-paced"
            paced_curl = timed(["curl", "-sS", "-o", str(out), paced_url])
            out.unlink()
            dest = work / "fetch-paced"
            paced_fetch = timed([str(FETCH)], fetch_env(paced_url, sha, dest))
            shutil.rmtree(dest)

            # Resume inside one process: the server cuts the connection half-way.
            dest = work / "cut"
            proc = subprocess.run(
                [str(FETCH)], env=fetch_env(cut_url, sha, dest), capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stderr
            cut = server.served("cut.bin")
            resent_cut, rehashed_cut = cut.bytes_sent - size, rehashed(proc.stderr)

            # Resume in a new process, as after a pod restart: SIGTERM half-way, run again.
            dest = work / "killed"
            first = subprocess.Popen(
                [str(FETCH)],
                env=fetch_env(kill_url, sha, dest),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            part = dest / "model.bin.part"
            deadline = time.monotonic() + 30
            while (not part.exists() or part.stat().st_size < size // 2) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            first.send_signal(signal.SIGTERM)
            first.wait()
            server.served("slow.bin").behaviour.rate = None
            proc = subprocess.run(
                [str(FETCH)], env=fetch_env(kill_url, sha, dest), capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stderr
            slow = server.served("slow.bin")
            resent_kill, rehashed_kill = slow.bytes_sent - size, rehashed(proc.stderr)

    mb = size / 1e6
    best_curl, best_fetch = min(curl_s), min(fetch_s)
    best_same = min(c + v for c, v in zip(curl_s, verify_s, strict=True))
    print(f"file: {args.size_mb} MiB random bytes, {args.runs} runs each, best run shown")
    print("loopback, unpaced:")
    print(f"  curl -o                      : {best_curl:6.3f} s {mb / best_curl:7.1f} MB/s")
    print(f"  curl -o, then sha256 + fsync : {best_same:6.3f} s {mb / best_same:7.1f} MB/s")
    print(f"  voice-fetch                  : {best_fetch:6.3f} s {mb / best_fetch:7.1f} MB/s")
    print(f"  ratio fetch / curl -o                : {best_curl / best_fetch:.2f} (goal >= 0.8)")
    print(f"  ratio fetch / curl + sha256 + fsync  : {best_same / best_fetch:.2f}")
    print(f"server paced at {args.link_mbps:g} MB/s:")
    print(f"  curl -o     : {paced_curl:6.3f} s {mb / paced_curl:7.1f} MB/s")
    print(f"  voice-fetch : {paced_fetch:6.3f} s {mb / paced_fetch:7.1f} MB/s")
    print(f"  ratio fetch / curl -o: {paced_curl / paced_fetch:.2f} (goal >= 0.8)")
    print(
        f"resume after a cut, same process : {resent_cut} bytes sent twice, "
        f"{rehashed_cut} bytes re-hashed from disk"
    )
    print(
        f"resume after SIGTERM, new process: {resent_kill} bytes sent twice, "
        f"{rehashed_kill} bytes re-hashed from disk"
    )


if __name__ == "__main__":
    main()
