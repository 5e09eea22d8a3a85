"""Every registered backbone x every neck x every task head the registry allows: the task's model builds (on the
meta device, without weights), or refuses with a VfmError that names the spec key to change."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from tests.tasks.contract_cases import CASES

import vfmkit.models.factory as factory
from vfmkit import Task
from vfmkit.errors import VfmError
from vfmkit.models.registry import list_backbones, resolve_entry
from vfmkit.tasks import get_task

# One entry of every distinct build path runs in the default suite (each family's test variant and one published
# architecture per family/class); the other published sizes differ only in widths and depths: marked slow.
DEFAULT = {
    "c-radio-v2-b",
    "radio-v2.5-g",
    "dinov2-vit-s14-reg",
    "openai-clip-vit-b16",
    "eva02-clip-l14",
    "siglip2-so400m-p16-naflex",
    "nv-clip-vit-l14-224",
}
ENTRIES = [
    entry.id if entry.test_only or entry.id in DEFAULT else pytest.param(entry.id, marks=pytest.mark.slow)
    for entry in list_backbones(include_test=True)
]


@pytest.fixture
def cached_backbones(monkeypatch):
    """Each backbone is built once per test (on the meta device) and copied for every head."""
    original, cache = factory.build_from_entry, {}

    def build(entry, pretrained=True, adaptors=(), **options):
        key = (entry.id, tuple(adaptors))
        if key not in cache:
            cache[key] = original(entry, pretrained=False, adaptors=adaptors, **options)
        return copy.deepcopy(cache[key])

    monkeypatch.setattr(factory, "build_from_entry", build)


@pytest.mark.parametrize("entry_id", ENTRIES)
def test_every_head_builds_or_names_the_key_to_change(entry_id: str, cached_backbones) -> None:
    entry = resolve_entry(entry_id)
    built, refused = 0, 0
    for case in CASES.values():
        if case.task not in entry.tasks:
            continue
        for head in case.heads:
            spec = Task(case.task, None, [*case.config, *head, f"{case.backbone_key}={entry_id}"]).spec
            taskdef = get_task(case.task).select(spec)
            try:
                with torch.device("meta"):
                    taskdef.build_model(spec, case.meta, pretrained=False)
                built += 1
            except VfmError as err:
                keys = {override.split("=")[0] for override in [*head, f"{case.backbone_key}="]}
                named = set(re.findall(r"\bmodel\.[a-z_]+", str(err)))
                assert named & keys, f"{case.task} {head} on {entry_id}: the error names no key to change: {err}"
                refused += 1
    assert built > 0, f"{entry_id} builds for no task at all"
