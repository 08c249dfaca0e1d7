"""Grouping of events as the real Go and Ruby SDKs send them (Debian's golang-github-getsentry-sentry-go-dev
and ruby-sentry-ruby, which .ci/run installs): a frame of a library the built-in rules put out of app
differs → one issue; an app frame differs → two. Both SDKs flag library frames in app here."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Project, TrackerServer

GOCODE = Path("/usr/share/gocode")  # where Debian's Go library packages live (a GOPATH)
GO_SDK = GOCODE / "src/github.com/getsentry/sentry-go"


def need(ok: bool, what: str) -> None:
    """Skip on a developer's machine without the package, fail in CI (which installs it)."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed; .ci/run installs it")
    pytest.skip(f"{what} is not installed")


GO_APP = """package main

import (
	"errors"
	"os"
	"time"

	"example.com/retry"
	"github.com/getsentry/sentry-go"
)

func main() {
	sentry.Init(sentry.ClientOptions{Dsn: os.Args[1]})
	APPFUNC(func() error {
		err := errors.New("cart has no items")
		sentry.CaptureException(err)
		return err
	})
	sentry.Flush(10 * time.Second)
}

func APPFUNC(fn func() error) { retry.Do(fn) }
"""

GO_RETRY = """package retry

// Do runs fn once through %s, as a library in the module cache would.
func Do(fn func() error) error { return %s(fn) }

func %s(fn func() error) error { return fn() }
"""


def go_event(project: Project, tmp: Path, name: str, helper: str, app_func: str) -> None:
    """Build and run a Go program with the real SDK whose closure calls back through a library that
    sits under a module cache path (go/pkg/mod); the closure's name comes from `app_func`."""
    root = tmp / name
    library = root / "go/pkg/mod/src/example.com/retry"
    library.mkdir(parents=True)
    (library / "retry.go").write_text(GO_RETRY % (helper, helper, helper))
    app = root / "app"
    app.mkdir()
    (app / "main.go").write_text(GO_APP.replace("APPFUNC", app_func))
    env = {**os.environ, "GOPATH": f"{root / 'go/pkg/mod'}:{GOCODE}", "GO111MODULE": "off", "GOFLAGS": "",
           "GOCACHE": str(tmp / "gocache")}
    built = subprocess.run(["go", "build", "-o", str(root / "shop"), "."], cwd=app, env=env, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(root / "shop"), project.dsn], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr


def test_go_sdk_module_cache_frames_do_not_split(tracker: TrackerServer, project: Project, tmp_path: Path) -> None:
    need(shutil.which("go") is not None and GO_SDK.exists(), "go with golang-github-getsentry-sentry-go-dev")
    go_event(project, tmp_path, "v1", "attempt", "checkout")
    go_event(project, tmp_path, "v2", "tryOnce", "checkout")  # another version of the library
    [issue] = tracker.wait_issues(project, 2)
    assert issue["count"] == "2"
    frames = tracker.latest_event(issue["id"])["entries"][0]["data"]["values"][-1]["stacktrace"]["frames"]
    library = [f for f in frames if "/go/pkg/mod/" in (f.get("absPath") or "")]
    assert library and not any(f["inApp"] for f in library)
    assert {(f["data"]["sdk_in_app"], f["data"]["in_app_rule"]) for f in library} == {(True, "built-in rule path:**/go/pkg/mod/** -app")}
    go_event(project, tmp_path, "v3", "attempt", "refund")  # another app function
    assert len(tracker.wait_issues(project, 3)) == 2


RUBY_APP = """require "sentry-ruby"
require_relative "../lib/vendor/retry"

Sentry.init do |config|
  config.dsn = ARGV[0]
  config.background_worker_threads = 0  # send before the script ends
end

def APPFUNC
  Retry.run { raise ArgumentError, "cart has no items" }
rescue ArgumentError => e
  Sentry.capture_exception(e)
end

APPFUNC
"""

RUBY_RETRY = """# A library vendored into the app's lib/ (the SDK calls lib/ the app's own code).
module Retry
  def self.run(&block)
    HELPER(&block)
  end

  def self.HELPER
    yield
  end
end
"""


def ruby_event(project: Project, tmp: Path, name: str, helper: str, app_func: str) -> None:
    root = tmp / name
    (root / "lib/vendor").mkdir(parents=True)
    (root / "app").mkdir()
    (root / "lib/vendor/retry.rb").write_text(RUBY_RETRY.replace("HELPER", helper))
    (root / "app/shop.rb").write_text(RUBY_APP.replace("APPFUNC", app_func))
    ran = subprocess.run(["ruby", "app/shop.rb", project.dsn], cwd=root, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "Sending envelope" in ran.stdout + ran.stderr, ran.stderr


def test_ruby_sdk_vendored_frames_do_not_split(tracker: TrackerServer, project: Project, tmp_path: Path) -> None:
    need(shutil.which("ruby") is not None and subprocess.run(["ruby", "-e", "require 'sentry-ruby'"]).returncode == 0,
         "ruby with ruby-sentry-ruby")
    ruby_event(project, tmp_path, "v1", "attempt", "checkout")
    ruby_event(project, tmp_path, "v2", "try_once", "checkout")
    [issue] = tracker.wait_issues(project, 2)
    assert issue["count"] == "2"
    frames = tracker.latest_event(issue["id"])["entries"][0]["data"]["values"][-1]["stacktrace"]["frames"]
    vendored = [f for f in frames if "vendor/retry.rb" in (f.get("absPath") or "")]
    assert vendored and not any(f["inApp"] for f in vendored)
    assert {(f["data"]["sdk_in_app"], f["data"]["in_app_rule"]) for f in vendored} == {(True, "built-in rule path:**/vendor/** -app")}
    ruby_event(project, tmp_path, "v3", "attempt", "refund")
    assert len(tracker.wait_issues(project, 3)) == 2
