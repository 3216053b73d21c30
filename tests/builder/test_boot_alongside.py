"""`build --boot-test`: the boot test runs alongside the read-only audit (faked at the seam).

The audit (``label_steps.audit_disk``) and the boot test (``boot_test``) are
replaced by fakes that each wait for the other to have started: run one after
the other, they would time out. The ``stop`` event reaches a real process
through :func:`imagefactory.run.run`.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagefactory.audit import AuditReport
from imagefactory.boot.qemu import BootResult
from imagefactory.builder import pipeline
from imagefactory.builder.bootjob import BootJob
from imagefactory.builder.context import BuildContext, BuildOptions
from imagefactory.errors import AuditError, BootTestError
from imagefactory.progress import Progress
from imagefactory.recipe import DEFAULT_LIMITS, load_recipe
from imagefactory.run import run
from imagefactory.settings import Settings

REPO = Path(__file__).resolve().parents[2]
#: Long enough for a loaded machine, short enough that a sequential run fails fast.
MEET = 20.0


def _result(passed: bool, reason: str = "marker seen") -> BootResult:
    return BootResult(passed, 1.0, "tcg", Path("boot-test.log"), "login:", reason)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[BuildContext]:
    recipe = load_recipe(REPO / "recipes" / "site-base-debian12.yaml", DEFAULT_LIMITS)
    with (tmp_path / "build.log").open("w") as log:
        yield BuildContext(
            recipe=recipe,
            settings=Settings(cache_dir=tmp_path / "cache"),
            options=BuildOptions(boot_test=True),
            progress=Progress(stream=io.StringIO()),
            staging=tmp_path,
            logfile=log,
        )


class Meeting:
    """Two fakes that only finish when both have started (proves they overlap)."""

    def __init__(self) -> None:
        self.audit_started = threading.Event()
        self.boot_started = threading.Event()
        self.boot_stop: threading.Event | None = None

    def audit(self, passed: bool) -> Any:
        def fake_audit(ctx: BuildContext) -> None:
            self.audit_started.set()
            assert self.boot_started.wait(MEET), "the boot test did not start alongside"
            ctx.audit = AuditReport("worker-node-default", "1", ())
            if not passed:
                raise AuditError("the audit failed 1 required check(s): seal.machine-id", [])

        return fake_audit

    def boot(self, passed: bool) -> Any:
        def fake_boot(*args: Any, stop: threading.Event | None = None, **kwargs: Any) -> Any:
            self.boot_stop = stop
            self.boot_started.set()
            assert self.audit_started.wait(MEET), "the audit did not run alongside"
            return _result(passed, "marker seen" if passed else "no marker within 600s")

        return fake_boot


def _fake(monkeypatch: pytest.MonkeyPatch, audit_passes: bool, boot_passes: bool) -> Meeting:
    meeting = Meeting()
    monkeypatch.setattr(pipeline, "audit_disk", meeting.audit(audit_passes))
    monkeypatch.setattr(pipeline, "boot_test", meeting.boot(boot_passes))
    return meeting


def test_the_boot_test_and_the_audit_run_at_once(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    meeting = _fake(monkeypatch, audit_passes=True, boot_passes=True)
    pipeline.check_disk(ctx)
    assert ctx.boot_job is not None  # still running (or done) through the label step
    pipeline.run_boot_test(ctx)
    assert ctx.boot_job is None
    assert ctx.boot is not None
    assert ctx.boot["passed"] is True
    assert meeting.boot_stop is not None
    assert not meeting.boot_stop.is_set()


def test_a_failed_audit_reports_the_boot_test_too(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(monkeypatch, audit_passes=False, boot_passes=False)
    with pytest.raises(AuditError) as exc:
        pipeline.check_disk(ctx)
    assert "seal.machine-id" in exc.value.message
    assert "the boot test alongside failed: no marker within 600s" in exc.value.message
    assert "[FAILED] boot-test: no marker within 600s (see boot-test.log)" in exc.value.findings
    assert ctx.boot is not None
    assert ctx.boot["passed"] is False


def test_a_failed_audit_with_a_passing_boot_test_says_so(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(monkeypatch, audit_passes=False, boot_passes=True)
    with pytest.raises(AuditError, match="the boot test alongside passed: marker seen"):
        pipeline.check_disk(ctx)


def test_a_failed_boot_test_fails_the_build_and_says_the_audit_passed(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake(monkeypatch, audit_passes=True, boot_passes=False)
    pipeline.check_disk(ctx)
    with pytest.raises(BootTestError) as exc:
        pipeline.run_boot_test(ctx)
    assert exc.value.message == "boot test failed: no marker within 600s; the audit passed"
    assert exc.value.exit_code == 1


def test_without_boot_test_nothing_starts_alongside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load_recipe(REPO / "recipes" / "site-base-debian12.yaml", DEFAULT_LIMITS)
    ctx = BuildContext(
        recipe=recipe,
        settings=Settings(cache_dir=tmp_path / "cache"),
        options=BuildOptions(boot_test=False),
        progress=Progress(stream=io.StringIO()),
        staging=tmp_path,
        logfile=io.StringIO(),
    )
    audited: list[bool] = []
    monkeypatch.setattr(pipeline, "audit_disk", lambda c: audited.append(True))

    def no_boot(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("boot test started without --boot-test")

    monkeypatch.setattr(pipeline, "boot_test", no_boot)
    pipeline.check_disk(ctx)
    assert audited == [True]
    assert ctx.boot_job is None


def test_an_interrupted_audit_stops_the_boot_test(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the audit: build() stops the boot job (qemu) before it cleans up."""
    boot_started = threading.Event()
    stopped_after: list[float] = []

    def blocking_boot(*args: Any, stop: threading.Event | None = None, **kwargs: Any) -> Any:
        assert stop is not None
        boot_started.set()
        began = time.monotonic()
        stop.wait(MEET)
        stopped_after.append(time.monotonic() - began)
        return _result(False, "stopped")

    def interrupted_audit(ctx: BuildContext) -> None:
        assert boot_started.wait(MEET)
        raise KeyboardInterrupt

    def failing_step(c: BuildContext) -> None:
        pipeline.check_disk(c)

    monkeypatch.setattr(pipeline, "boot_test", blocking_boot)
    monkeypatch.setattr(pipeline, "audit_disk", interrupted_audit)
    monkeypatch.setattr(
        pipeline, "STEPS", (pipeline.Step("audit", "audit (interrupted)", failing_step),)
    )
    monkeypatch.setattr(pipeline, "BuildContext", lambda **kwargs: ctx)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(ctx.recipe, ctx.settings, ctx.options, ctx.progress, ctx.staging / "out")
    assert len(stopped_after) == 1
    assert stopped_after[0] < MEET / 2


def test_run_stop_event_stops_a_real_command(tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    result = run(["sleep", "30"], stop=stop, check=False)
    assert time.monotonic() - started < 10
    assert result.cancelled
    assert not result.stopped


def test_a_boot_job_hands_its_exception_to_the_main_thread() -> None:
    def broken(stop: threading.Event) -> BootResult:
        raise BootTestError("qemu-system-x86_64 is missing")

    job = BootJob(broken, Progress(stream=io.StringIO()), "booting")
    job.start()
    with pytest.raises(BootTestError, match="missing"):
        job.wait()
    assert job.done


def test_progress_shows_the_boot_test_beside_the_audit() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream)
    with progress.step("audit", "audit"):
        progress.alongside("boot-test", "booting x.qcow2 under qemu")
        progress.status("auditing x.qcow2 read-only")
        progress.alongside("boot-test", None)
    assert "auditing x.qcow2 read-only | boot-test: booting x.qcow2 under qemu 0s" in (
        stream.getvalue()
    )
