"""The audit: re-read a finished image read-only and check every profile item."""

from imagefactory.audit.checks import AuditReport, CheckResult, Evidence, run_audit

__all__ = ["AuditReport", "CheckResult", "Evidence", "run_audit"]
