"""The model registry: every model kind loads once (also from several threads), is listed while it
is loaded, and `unload` frees it: no reference to its weights survives and the memory returns."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest
import torch

from backend.model_registry import ModelRegistry


def test_a_model_is_built_once_even_when_threads_ask_together():
    registry, builds = ModelRegistry(), []

    def build():
        builds.append(1)
        time.sleep(0.05)  # a slow load: the other threads arrive while it runs
        return torch.nn.Linear(4, 4)

    got = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("sam", "a", build))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and all(model is got[0] for model in got)
    assert registry.loads == {"sam": 1} and registry.loaded() == [{"kind": "sam"}]


def test_another_key_of_a_kind_replaces_it_and_unload_frees_every_kind():
    registry = ModelRegistry()
    first = registry.get("pipeline", "a", lambda: torch.nn.Linear(4, 4), {"base": "a"})
    gone = weakref.ref(first.weight)
    del first
    registry.get("pipeline", "b", lambda: torch.nn.Linear(4, 4), {"base": "b"})
    registry.get("marigold", "m", lambda: torch.nn.Linear(4, 4), {"path": "m"})
    assert gone() is None  # the replaced pipeline's weights are gone before the next call
    assert registry.loaded() == [{"kind": "pipeline", "base": "b"}, {"kind": "marigold", "path": "m"}]
    weights = [weakref.ref(registry.peek(kind).weight) for kind in ("pipeline", "marigold")]
    assert registry.unload() == [{"kind": "pipeline", "base": "b"}, {"kind": "marigold", "path": "m"}]
    assert [w() for w in weights] == [None, None] and registry.loaded() == []
    assert registry.load_count() == 3


@pytest.fixture(scope="module")
def tiny_marigold(tmp_path_factory):
    from backend.testing.random_addons import write_tiny_marigold_normals

    return write_tiny_marigold_normals(tmp_path_factory.mktemp("models") / "marigold-normals")


def test_every_model_kind_is_listed_while_loaded_and_freed_by_the_engines_unload(tiny_models, tiny_marigold):
    from backend import sam
    from backend.diffusion import engine, models, sketch_models
    from backend.materials import marigold
    from backend.model_registry import registry

    engine.unload()
    spec = models.resolve(tiny_models["base"], tiny_models["ip_adapter"])
    loaded = {
        "pipeline": models.load_pipeline(spec).unet,
        "content_encoder": models.load_content_encoder(tiny_models["base"].parent / "clip-text", "cpu", "float32")[0],
        "sam": sam.load_sam(sam.resolve_sam(tiny_models["sam"]), "cpu")[0],
        "marigold": marigold.load_normals(tiny_marigold).unet,
        "lgp": sketch_models.load_lgp(sketch_models.resolve_lgp(tiny_models["lgp"]), "cpu"),
        "controlnet": sketch_models.load_controlnet(tiny_models["controlnet"], "cpu", "float32"),
    }
    assert [entry["kind"] for entry in registry.loaded()] == list(loaded)
    assert registry.loaded()[0] == {"kind": "pipeline", **models.describe_spec(spec)}
    assert models.load_pipeline(spec).unet is loaded["pipeline"]  # reused
    weights = {kind: [weakref.ref(p) for p in model.parameters()] for kind, model in loaded.items()}
    del loaded
    assert engine.unload() is True
    gc.collect()
    alive = {kind: sum(ref() is not None for ref in refs) for kind, refs in weights.items()}
    assert alive == dict.fromkeys(weights, 0)
    assert registry.loaded() == [] and engine.unload() is False


def test_unload_returns_the_memory_of_a_large_model_to_the_system():
    # In a process of its own: the engine's allocator setting (keep freed memory) must not apply.
    script = textwrap.dedent("""
        import torch
        from backend.model_registry import registry

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        before = rss()
        registry.get("pipeline", "big", lambda: torch.nn.Linear(8192, 8192))  # 256 MiB of random weights
        loaded = rss()
        registry.unload()
        print(before, loaded, rss())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    before, loaded, after = map(int, out.stdout.split())
    assert loaded - before > 250 * 2**20
    assert loaded - after > 250 * 2**20  # the registry held the only reference: all of it returned
