"""voice-fetch against a real HTTP server on 127.0.0.1, with the real model files."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from fetchkit import VOICE_FETCH, ModelFile, entry, fetch_env, run_fetch
from fileserver import FileServer

pytestmark = pytest.mark.fetch


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_full_download_is_verified_and_a_rerun_does_no_network_io(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    files = [
        entry(models["joe.onnx"], server.add("joe.onnx", models["joe.onnx"].path)),
        entry(
            models["joe.onnx.json"],
            server.add("joe.onnx.json", models["joe.onnx.json"].path),
            path="voices/joe.onnx.json",
        ),
        entry(models["whisper.bin"], server.add("model.bin", models["whisper.bin"].path)),
        entry(models["smollm2.gguf"], server.add("smol.gguf", models["smollm2.gguf"].path)),
    ]
    dest = tmp_path / "joe" / "v1"

    run = run_fetch(fetch_env(dest, files))

    assert run.code == 0, run.stderr
    total = sum(m.size for m in models.values())
    final = run.final
    assert final["phase"] == "Verified"
    assert final["reason"] == "Verified"
    assert final["doneBytes"] == final["totalBytes"] == total
    assert final["files"] == [
        {"path": f["path"], "sha256": f["sha256"], "bytes": m.size}
        for f, m in zip(files, models.values(), strict=True)
    ]
    for f, m in zip(files, models.values(), strict=True):
        assert (dest / f["path"]).read_bytes() == m.path.read_bytes()
        assert not (dest / (f["path"] + ".part")).exists()
    manifest = json.loads((dest / ".manifest.json").read_text())
    assert manifest["version"] == "v1"
    assert manifest["files"] == final["files"]
    assert manifest["completedAt"].endswith("Z")
    # Written last: after every file reached its final name.
    manifest_time = (dest / ".manifest.json").stat().st_mtime_ns
    assert all((dest / f["path"]).stat().st_mtime_ns <= manifest_time for f in files)
    assert server.total_requests == len(files)

    before = _tree(dest)
    rerun = run_fetch(fetch_env(dest, files))

    assert rerun.code == 0, rerun.stderr
    assert server.total_requests == len(files)  # not one more request
    assert rerun.final["phase"] == "Verified"
    assert rerun.final["files"] == final["files"]
    assert _tree(dest) == before  # manifest (and its completedAt) untouched too


def test_manifest_is_absent_while_files_are_being_fetched(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    url = server.add("joe.onnx", m.path, rate=40e6)
    dest = tmp_path / "v1"
    proc = subprocess.Popen(
        [str(VOICE_FETCH)],
        env=fetch_env(dest, [entry(m, url)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen_part = False
    while proc.poll() is None:
        if (dest / "joe.onnx.part").exists():
            seen_part = True
            assert not (dest / ".manifest.json").exists()
            assert not (dest / "joe.onnx").exists()
        time.sleep(0.02)
    assert proc.returncode == 0
    assert seen_part
    assert (dest / ".manifest.json").exists()


def test_cut_connection_resumes_without_resending_received_bytes(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["whisper.bin"]
    cut = 20_000_000
    url = server.add("model.bin", m.path, cut_after=cut, cut_times=2)

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)]))

    assert run.code == 0, run.stderr
    served = server.served("model.bin")
    assert [r["range"] for r in served.requests] == [None, f"bytes={cut}-", f"bytes={2 * cut}-"]
    assert served.bytes_sent == m.size  # every byte sent exactly once
    assert (tmp_path / "v1" / "whisper.bin").read_bytes() == m.path.read_bytes()


def test_part_left_by_an_earlier_pod_is_rehashed_and_resumed(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    dest = tmp_path / "v1"
    dest.mkdir()
    prefix = 25_000_000
    (dest / "joe.onnx.part").write_bytes(m.path.read_bytes()[:prefix])
    url = server.add("joe.onnx", m.path)

    run = run_fetch(fetch_env(dest, [entry(m, url)]))

    assert run.code == 0, run.stderr
    served = server.served("joe.onnx")
    assert [r["range"] for r in served.requests] == [f"bytes={prefix}-"]
    assert served.bytes_sent == m.size - prefix
    assert f"re-hashed {prefix} bytes" in run.stderr
    assert (dest / "joe.onnx").read_bytes() == m.path.read_bytes()


def test_untrustworthy_part_is_replaced_by_a_clean_download(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    dest = tmp_path / "v1"
    dest.mkdir()
    (dest / "joe.onnx.part").write_bytes(b"\0" * 1_000_000)  # not the file's first bytes
    url = server.add("joe.onnx", m.path)

    run = run_fetch(fetch_env(dest, [entry(m, url)]))

    assert run.code == 0, run.stderr
    served = server.served("joe.onnx")
    assert [r["range"] for r in served.requests] == ["bytes=1000000-", None]
    assert (dest / "joe.onnx").read_bytes() == m.path.read_bytes()


def test_checksum_mismatch_leaves_nothing_and_spares_the_previous_version(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    previous = tmp_path / "joe" / "v1"
    ok = run_fetch(fetch_env(previous, [entry(m, server.add("good.onnx", m.path))]))
    assert ok.code == 0, ok.stderr
    before = _tree(previous)
    url = server.add("bad.onnx", m.path, corrupt=True)
    dest = tmp_path / "joe" / "v2"

    run = run_fetch(fetch_env(dest, [entry(m, url)]))

    assert run.code == 3
    assert run.final["phase"] == "Failed"
    assert run.final["reason"] == "ChecksumMismatch"
    assert "spec.files[0] (joe.onnx)" in run.final["message"]
    assert m.sha256 in run.final["message"]
    assert "files" not in run.final
    assert not (dest / "joe.onnx").exists()
    assert not (dest / "joe.onnx.part").exists()
    assert not (dest / ".manifest.json").exists()
    assert _tree(previous) == before


def test_server_errors_are_retried_until_success(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    url = server.add("cfg.json", m.path, fail_times=3, fail_status=503)

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)]))

    assert run.code == 0, run.stderr
    assert len(server.served("cfg.json").requests) == 4
    assert any("HTTP 503" in s["message"] for s in run.statuses)  # retries are visible


def test_persistent_server_errors_fail_with_http_error(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    url = server.add("cfg.json", m.path, status=500)

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)]))

    assert run.code == 1
    assert run.final["reason"] == "HTTPError"
    assert len(server.served("cfg.json").requests) == 4  # FETCH_MAX_ATTEMPTS


def test_stalled_response_times_out_and_resumes(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    url = server.add("joe.onnx", m.path, stall_after=10_000_000, stall_for=3, stall_times=1)

    began = time.monotonic()
    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)]))

    assert run.code == 0, run.stderr
    assert time.monotonic() - began < 3  # gave up on the stall after ~1 s, did not wait it out
    served = server.served("joe.onnx")
    assert [r["range"] for r in served.requests] == [None, "bytes=10000000-"]
    assert served.bytes_sent == m.size
    assert any("no data from" in s["message"] for s in run.statuses)


def test_stalls_without_end_fail_with_stalled(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    # A trickle of bytes per attempt is no progress either.
    url = server.add("cfg.json", m.path, stall_after=100, stall_for=1.5, stall_times=99)

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)], FETCH_MAX_ATTEMPTS="2"))

    assert run.code == 1
    assert run.final["reason"] == "Stalled"
    assert "spec.files[0]" in run.final["message"]


def test_connection_errors_exhausted_fail_with_connection_error(
    tmp_path: Path, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    with FileServer() as gone:
        url = f"{gone.base}/cfg.json"  # nothing listens there once the server is closed

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)], FETCH_MAX_ATTEMPTS="2"))

    assert run.code == 1
    assert run.final["reason"] == "ConnectionError"


def test_404_is_not_found(tmp_path: Path, server: FileServer, models: dict[str, ModelFile]) -> None:
    m = models["joe.onnx.json"]

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, f"{server.base}/missing.json")]))

    assert run.code == 5
    assert run.final["reason"] == "NotFound"
    assert "HTTP 404" in run.final["message"]


def test_401_is_unauthorized_and_not_retried(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    url = server.add("cfg.json", m.path, require=("Authorization", "Bearer right"))

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)]))

    assert run.code == 5
    assert run.final["reason"] == "Unauthorized"
    assert len(server.served("cfg.json").requests) == 1


def test_auth_header_is_sent_and_never_shown(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    secret = "Token s3cr3t-value-7f1c9a"
    m, bad = models["joe.onnx.json"], models["joe.onnx"]
    url = server.add("cfg.json", m.path, require=("X-Api-Key", secret))
    # A failure too, so that error paths are searched for the secret as well.
    failing = server.add("bad.onnx", bad.path, require=("X-Api-Key", secret), corrupt=True)
    env = dict(FETCH_AUTH_HEADER=secret, FETCH_AUTH_HEADER_NAME="X-Api-Key")

    ok = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)], **env))
    failed = run_fetch(fetch_env(tmp_path / "v2", [entry(m, url), entry(bad, failing)], **env))

    assert ok.code == 0, ok.stderr
    assert failed.code == 3
    assert server.served("cfg.json").requests[0]["headers"]["X-Api-Key"] == secret
    for run in (ok, failed):
        assert secret not in run.stdout
        assert secret not in run.stderr
        assert "s3cr3t" not in run.stdout + run.stderr


def test_auth_header_does_not_follow_a_redirect_to_another_host(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    with FileServer() as cdn:
        target = cdn.add("cfg.json", m.path)
        url = server.add("cfg.json", m.path, redirect=target)

        run = run_fetch(
            fetch_env(tmp_path / "v1", [entry(m, url)], FETCH_AUTH_HEADER="Bearer private")
        )

        assert run.code == 0, run.stderr
        assert server.served("cfg.json").requests[0]["headers"]["Authorization"] == "Bearer private"
        assert "Authorization" not in cdn.served("cfg.json").requests[0]["headers"]


def test_server_without_range_support_restarts_the_file(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    url = server.add("joe.onnx", m.path, no_range=True, cut_after=5_000_000, cut_times=1)

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)]))

    assert run.code == 0, run.stderr
    assert (tmp_path / "v1" / "joe.onnx").read_bytes() == m.path.read_bytes()


def test_file_url_is_copied_and_verified(tmp_path: Path, models: dict[str, ModelFile]) -> None:
    m = models["smollm2.gguf"]
    dest = tmp_path / "v1"

    run = run_fetch(fetch_env(dest, [entry(m, m.path.as_uri(), path="llm/model.gguf")]))

    assert run.code == 0, run.stderr
    assert (dest / "llm" / "model.gguf").read_bytes() == m.path.read_bytes()
    assert run.final["files"] == [{"path": "llm/model.gguf", "sha256": m.sha256, "bytes": m.size}]


def test_file_url_with_wrong_digest_is_a_checksum_mismatch(
    tmp_path: Path, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx.json"]
    wrong = {"url": m.path.as_uri(), "sha256": "ab" * 32, "path": "cfg.json"}

    run = run_fetch(fetch_env(tmp_path / "v1", [wrong]))

    assert run.code == 3
    assert run.final["reason"] == "ChecksumMismatch"
    assert not (tmp_path / "v1" / "cfg.json").exists()


def test_missing_local_file_is_not_found(tmp_path: Path, models: dict[str, ModelFile]) -> None:
    m = models["joe.onnx.json"]

    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, (tmp_path / "nope").as_uri())]))

    assert run.code == 5
    assert run.final["reason"] == "NotFound"


def test_present_file_with_right_digest_is_kept(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    a, b = models["joe.onnx"], models["joe.onnx.json"]
    dest = tmp_path / "v1"
    dest.mkdir()
    (dest / "joe.onnx").write_bytes(a.path.read_bytes())
    files = [entry(a, server.add("a", a.path)), entry(b, server.add("b", b.path))]

    run = run_fetch(fetch_env(dest, files))

    assert run.code == 0, run.stderr
    assert server.served("a").requests == []
    assert len(server.served("b").requests) == 1


def test_progress_reports_are_rate_limited(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    url = server.add("joe.onnx", m.path, rate=m.size / 2.5)  # about 2.5 s of streaming

    began = time.monotonic()
    run = run_fetch(fetch_env(tmp_path / "v1", [entry(m, url)], FETCH_REPORT_INTERVAL="0.5"))
    elapsed = time.monotonic() - began

    assert run.code == 0, run.stderr
    statuses = run.statuses
    state_changes = sum(
        1
        for before, after in zip([None, *statuses], statuses, strict=False)
        if before is None
        or (before["phase"], before["message"]) != (after["phase"], after["message"])
    )
    progress_only = len(statuses) - state_changes
    assert progress_only <= elapsed / 0.5 + 1
    assert progress_only >= 2  # progress did show while it ran
    done = [s["doneBytes"] for s in statuses]
    assert done == sorted(done)
    assert any(0 < s["doneBytes"] < m.size and s["totalBytes"] == m.size for s in statuses)


def test_sigterm_keeps_the_part_for_the_next_pod(
    tmp_path: Path, server: FileServer, models: dict[str, ModelFile]
) -> None:
    m = models["joe.onnx"]
    url = server.add("joe.onnx", m.path, rate=m.size / 3)
    dest = tmp_path / "v1"
    env = fetch_env(dest, [entry(m, url)])
    proc = subprocess.Popen(
        [str(VOICE_FETCH)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    part = dest / "joe.onnx.part"
    while not (part.exists() and part.stat().st_size > 10_000_000):
        time.sleep(0.02)
    proc.terminate()
    out, _ = proc.communicate(timeout=10)

    assert proc.returncode == 143
    assert part.stat().st_size > 10_000_000
    assert '"Failed"' not in out.decode()  # stopping is not a failure of the download
    kept = part.stat().st_size
    server.served("joe.onnx").behaviour.rate = None

    run = run_fetch(env)

    assert run.code == 0, run.stderr
    assert server.served("joe.onnx").requests[-1]["range"] == f"bytes={kept}-"
    assert (dest / "joe.onnx").read_bytes() == m.path.read_bytes()
