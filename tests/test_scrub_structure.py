"""A project's sensitive fields filter values, never the event's structure: with `trace`, `exception`,
`user` or `values` listed, events are still stored, grouped on their stack trace and shown, and what
the structure holds is still filtered (found comparing the worker's results: every event was a 500)."""
from __future__ import annotations

import pytest

from conftest import Project, TrackerServer


@pytest.mark.parametrize("field", ["trace", "exception", "values", "frames", "user", "tags", "mechanism"])
def test_a_sensitive_field_named_like_the_structure_keeps_the_event(tracker: TrackerServer, field: str) -> None:
    project: Project = tracker.create_project(f"structure-{field}")
    r = tracker.api("PUT", f"projects/tracker/{project.slug}/", json={"sensitiveFields": [field]})
    assert r.status_code == 200, r.text
    event = {"exception": {"values": [{"type": "ValueError", "value": "bad amount",
                                       "mechanism": {"type": "generic", "handled": False},
                                       "stacktrace": {"frames": [{"filename": "app/pay.py", "function": "charge",
                                                                  "lineno": 12, "in_app": True,
                                                                  "vars": {f"{field}_id": "s3cr3t-value"}}]}}]},
             "user": {"id": "42", "email": "ada@example.org"}, "tags": {"service": "payments"},
             "extra": {f"my_{field}": "kept out"}}
    event_id = tracker.send_event(project, event)
    [issue] = tracker.wait_issues(project, 1)
    assert issue["title"] == "ValueError: bad amount"
    stored = tracker.api("GET", f"projects/tracker/{project.slug}/events/{event_id}/").json()
    [exception] = [entry for entry in stored["entries"] if entry["type"] == "exception"]
    [frame] = exception["data"]["values"][0]["stacktrace"]["frames"]
    assert frame["function"] == "charge" and frame["lineNo"] == 12
    assert frame["vars"][f"{field}_id"] == "[Filtered]"  # what the structure holds is still filtered
    assert stored["context"][f"my_{field}"] == "[Filtered]"
    assert tracker.web.get(f"/issues/{issue['id']}/").status_code == 200
