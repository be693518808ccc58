"""The backend service: JSON lines on stdin/stdout (`protocol`), a job queue (`jobs`), the process
that ties them together (`server`) and its log files (`logs`). Documented in docs/PROTOCOL.md."""
