"""`python -m backend batch MANIFEST --out DIR [--ray [ADDRESS]] [--workers N]`: many jobs, one command.

The manifest is JSON lines, one job a line, with the fields of the service's `generate` request
(docs/PROTOCOL.md): `input` (relative paths are read from the manifest's folder), any generation
parameter, and optionally `output_dir`, relative to DIR (default `NNNN-<input stem>`, NNNN the line).
Each job is made in a staging folder under DIR/.staging, gets its done-marker (.done.json, written
atomically, listing its files and the identity of its line: a hash of the line's normalised fields)
last, and is then renamed into place; a job whose folder has a done-marker of the same identity
naming files that all exist is complete, and a re-run skips it (a line edited since is run again and
replaces the batch's own folder). Lines that share an `output_dir` are refused before any job runs,
one batch at a time holds DIR (a lock file), and a bad line (not UTF-8, not JSON, a bad field, a name
too long) or a failed job is recorded with its error code in DIR/summary.json, which is written
atomically whatever happens, and the batch goes on.

Locally the jobs run one at a time in this process (models load once). With --ray they run on a
pool of Ray actors, one per GPU (num_gpus=1) or CPU actors where the cluster has no GPU, each
loading models once and serving many jobs; results come back as they finish (ray.wait). DIR must
be on a file system every Ray node sees.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from backend.errors import TextureVariantsError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one batch per --out is then the user's care
    fcntl = None
from backend.service.job_request_checks import check_map_files, parse_generate
from backend.service.jobs import Job, run_job
from backend.service.protocol import ProtocolError

DONE_MARKER = ".done.json"
SUMMARY = "summary.json"
STAGING = ".staging"
LOCK = ".batch.lock"
MAX_NAME_BYTES = 200  # a folder name, leaving room for the staging folder's suffix under NAME_MAX (255)


def read_manifest(manifest: Path, out: Path) -> list[dict]:
    """One entry per non-empty line: {line, input, folder, fields} or {line, error} for a bad line."""
    entries = []
    with open(manifest, "rb") as f:
        for number, raw in enumerate(f, 1):
            if raw.strip():
                entries.append(_entry(number, raw, manifest.parent, out))
    return _refuse_shared_folders(entries)


def _refuse_shared_folders(entries: list[dict]) -> list[dict]:
    """Lines that name the same job folder: all of them are refused (none could be resumed safely)."""
    lines: dict[str, list[int]] = {}
    for entry in entries:
        if "folder" in entry:
            lines.setdefault(entry["folder"], []).append(entry["line"])
    for n, entry in enumerate(entries):
        shared = lines.get(entry.get("folder"), [])
        if len(shared) > 1:
            entries[n] = {"line": entry["line"], "error": {
                "code": "bad_request", "message": f"lines {', '.join(map(str, shared))} share the output_dir "
                f"{entry['folder']}", "hint": "give each line its own output_dir (or leave it out)"}}
    return entries


def identity(fields: dict) -> str:
    """The identity of a manifest line: a hash of its normalised fields (paths resolved, keys sorted)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def _entry(number: int, raw: bytes, home: Path, out: Path) -> dict:
    try:
        fields = json.loads(raw.decode("utf-8"))
        if not isinstance(fields, dict):
            raise ValueError(f"a line must be a JSON object, got {type(fields).__name__}")
    except ValueError as e:
        return {"line": number, "error": {"code": "bad_request", "message": f"line {number} is not a UTF-8 "
                                          f"JSON object: {e}"[:300], "hint": "write one JSON object per line"}}
    source = fields.get("input")
    if isinstance(source, str) and source:
        fields["input"] = str((home / source).resolve())
    if isinstance(fields.get("maps"), dict):  # a material's maps: read from the manifest's folder too
        fields["maps"] = {name: str((home / path).resolve()) if isinstance(path, str) and path else path
                          for name, path in fields["maps"].items()}
    relative = fields.get("output_dir") or f"{number:04d}-{Path(str(source)).stem or 'texture'}"
    folder = (out / str(relative)).resolve()
    if os.path.isabs(str(relative)) or out.resolve() not in folder.parents:
        return {"line": number, "error": {"code": "bad_request", "message": f"line {number}: output_dir "
                                          f"{relative!r} must be a folder inside --out",
                                          "hint": "give output_dir relative to --out, without '..'"}}
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in Path(str(relative)).parts):
        return {"line": number, "error": {"code": "bad_request", "message": f"line {number}: output_dir "
                                          f"{str(relative)[:60]!r}... has a name over {MAX_NAME_BYTES} bytes",
                                          "hint": "use shorter folder names"}}
    fields["output_dir"] = str(folder)
    try:
        check_map_files(parse_generate(fields, number)["params"].maps, number)
    except ProtocolError as e:
        return {"line": number, "error": {"code": e.code, "message": f"line {number}: {e.message}", "hint": e.hint}}
    return {"line": number, "input": fields["input"], "folder": str(folder), "fields": fields,
            "staging": str(out.resolve() / STAGING), "identity": identity(fields)}


def _marker(folder: str | Path) -> dict | None:
    try:
        marker = json.loads((Path(folder) / DONE_MARKER).read_text(encoding="utf-8"))
        return marker if isinstance(marker, dict) else None
    except (OSError, ValueError):
        return None


def completed(folder: str | Path, line_identity: str | None = None) -> dict | None:
    """The done-marker of a complete job folder (every file it lists exists; made from a line of this
    identity when one is given), else None."""
    marker = _marker(folder)
    try:
        names = [name for entry in marker["files"] for name in _flat(_file_names(entry))]
    except (KeyError, TypeError):
        return None
    if line_identity is not None and marker.get("identity") != line_identity:
        return None
    return marker if all((Path(folder) / name).is_file() for name in names) else None


def _file_names(entry: dict) -> dict:
    """The file names (no folders) of a result entry: its variant, tiled preview and maps."""
    names = {key: Path(entry[key]).name for key in ("path", "tiled") if entry.get(key)}
    if entry.get("maps"):
        names["maps"] = {name: Path(path).name for name, path in entry["maps"].items()}
    return names


def _flat(names: dict) -> list[str]:
    return [names[key] for key in ("path", "tiled") if key in names] + list(names.get("maps", {}).values())


def run_entry(entry: dict) -> dict:
    """Run one manifest job (in any process that sees the folders); return its summary record."""
    from backend.api import generate
    from backend.images import write_atomic

    record = {"line": entry["line"], "input": entry["input"], "folder": entry["folder"]}
    final = Path(entry["folder"])
    replaces = final.exists() and _marker(final) is not None  # the batch's own job of an edited line
    if final.exists() and not replaces:
        return record | {"state": "failed", "code": "bad_output", "message": f"{final} exists but holds no "
                         "finished job of this batch", "hint": "move that folder away, then run the batch again"}
    f = parse_generate(entry["fields"], entry["line"])
    Path(entry["staging"]).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{final.name}-", dir=entry["staging"]))
    job = Job(id=entry["line"], input=f["input"], output_dir=str(staging), params=f["params"], base=f["base"],
              ip_adapter=f["ip_adapter"], tiled_preview=f["tiled_preview"], preview_every=0, maps_only=f["maps_only"])
    ev = run_job(job, generate)
    if ev["type"] != "result":
        shutil.rmtree(staging, ignore_errors=True)
        return record | {"state": "failed", "code": ev.get("code", "cancelled"), "message": ev.get("message", ""),
                         "hint": ev.get("hint", "")}
    files = [e | _file_names(e) for e in ev["files"]]
    marker = {"line": entry["line"], "input": entry["input"], "identity": entry["identity"], "files": files}
    write_atomic(staging / DONE_MARKER, lambda out: out.write(json.dumps(marker, indent=1).encode()))
    try:
        if replaces:  # the old job goes aside first, and only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix="replaced-", dir=entry["staging"]))
            os.rename(final, old / "job")
        final.mkdir(parents=True, exist_ok=False)  # claims the name; POSIX rename() replaces an empty folder
        os.rename(staging, final)
        if replaces:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        return record | {"state": "failed", "code": "bad_output", "message": f"cannot move the job into {final}: "
                         f"{e}", "hint": "move that folder away, then run the batch again"}
    return record | {"state": "done", "files": files, "elapsed": ev["elapsed"], "pid": os.getpid()}


class BatchWorker:
    """A Ray actor's body: one process that keeps its models loaded and runs job after job."""

    def run(self, entry: dict) -> dict:
        return run_entry(entry)


def start_ray(address: str | None = None, **init_kwargs):
    """ray.init for a batch: a local cluster that imports this checkout's backend, or ADDRESS."""
    import ray

    if not ray.is_initialized():
        runtime_env = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}}
        ray.init(address=address, include_dashboard=False, runtime_env=None if address else runtime_env,
                 **init_kwargs)
    return ray


def _ray_jobs(entries: list[dict], workers: int | None):
    """Yield the records of `entries` as Ray actors finish them (ray.wait), `workers` actors at once."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = workers or gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
    actor = ray.remote(num_gpus=1, num_cpus=0)(BatchWorker) if gpus else ray.remote(num_cpus=1)(BatchWorker)
    free = [actor.remote() for _ in range(min(count, len(entries)))]
    waiting, running = list(reversed(entries)), {}
    while waiting or running:
        while free and waiting:
            entry, worker = waiting.pop(), free.pop()
            running[worker.run.remote(entry)] = (worker, entry)
        ready, _ = ray.wait(list(running), num_returns=1)
        worker, entry = running.pop(ready[0])
        try:
            yield ray.get(ready[0])
            free.append(worker)
        except ray.exceptions.RayError as e:  # the actor died: report the job, carry on with a new actor
            free.append(actor.remote())
            yield {"line": entry["line"], "input": entry["input"], "folder": entry["folder"], "state": "failed",
                   "code": "worker_failed", "message": f"the Ray worker failed: {type(e).__name__}: {e}"[:500],
                   "hint": "see the Ray logs; run the batch again to retry the failed jobs"}


def run_batch(manifest: str | os.PathLike, out: str | os.PathLike, *, use_ray: bool = False,
              workers: int | None = None, progress: bool | None = None) -> dict:
    """Run every job of `manifest` not yet complete in `out`; write and return the summary."""
    from tqdm import tqdm

    from backend.images import write_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, todo = [], []
    with _hold(out):
        shutil.rmtree(out / STAGING, ignore_errors=True)  # leftovers of an interrupted run: the batch's own
        try:
            for entry in read_manifest(Path(manifest), out):
                if "error" in entry:
                    records.append({"line": entry["line"], "state": "failed", **entry["error"]})
                elif (marker := completed(entry["folder"], entry["identity"])) is not None:
                    records.append({"line": entry["line"], "input": entry["input"], "folder": entry["folder"],
                                    "state": "skipped", "files": marker["files"]})
                else:
                    todo.append(entry)
            bar = tqdm(total=len(records) + len(todo), initial=len(records), desc="batch", unit="job",
                       file=sys.stderr, disable=None if progress is None else not progress)
            done = _ray_jobs(todo, workers) if use_ray else (_guarded(run_entry, entry) for entry in todo)
            for record in done:
                records.append(record)
                bar.update(1)
            bar.close()
            shutil.rmtree(out / STAGING, ignore_errors=True)
        finally:  # the summary is written whatever happened, with what was done so far
            summary = _summary(manifest, out, records, todo)
            write_atomic(out / SUMMARY, lambda f: f.write(json.dumps(summary, indent=1).encode()), overwrite=True)
    return summary


def _summary(manifest, out: Path, records: list[dict], todo: list[dict]) -> dict:
    ended = {r["line"] for r in records}
    records = sorted(records + [{"line": e["line"], "input": e["input"], "folder": e["folder"], "state": "not_run"}
                                for e in todo if e["line"] not in ended], key=lambda r: r["line"])
    counts = {state: sum(r["state"] == state for r in records) for state in ("done", "skipped", "failed", "not_run")}
    return {"manifest": str(Path(manifest).resolve()), "out": str(out.resolve()), "jobs": len(records),
            **counts, "failed_jobs": [r for r in records if r["state"] == "failed"], "records": records}


def _guarded(run, entry: dict) -> dict:
    """A job that fails outside its engine (a file system that refuses a name) fails alone."""
    try:
        return run(entry)
    except OSError as e:
        return {"line": entry["line"], "input": entry["input"], "folder": entry["folder"], "state": "failed",
                "code": "bad_output", "message": f"line {entry['line']}: {e}"[:500],
                "hint": "check the output folder and its name"}


@contextlib.contextmanager
def _hold(out: Path):
    """One batch at a time on `out` (an advisory lock on DIR/.batch.lock, released when the process ends)."""
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "another process"
                raise TextureVariantsError(f"another batch is running on {out} (pid {holder})",
                                           hint="wait for it to end, or choose another --out", code="busy") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def main(args) -> int:
    """`python -m backend batch`; exit code 0 when no job failed, 1 otherwise (see summary.json)."""
    ray = None
    if args.ray is not None:
        try:
            ray = start_ray(args.ray or None)
        except ImportError:
            raise TextureVariantsError("--ray needs Ray, which is not installed", hint="pip install '.[ray]' "
                                       "(or scripts/setup --ray)", code="not_set_up") from None
    try:
        summary = run_batch(args.manifest, args.out, use_ray=ray is not None, workers=args.workers)
    finally:
        if ray is not None:
            ray.shutdown()
    print(f"{summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed: "
          f"{Path(args.out) / SUMMARY}")
    for record in summary["failed_jobs"]:
        print(f"  line {record['line']}: {record['code']}: {record['message']}", file=sys.stderr)
    return 1 if summary["failed"] else 0
