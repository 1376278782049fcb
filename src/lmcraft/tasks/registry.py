"""The registered tasks: one line each. ``lmcraft finetune --task NAME``, the saved heads of config.json and
the Predictor find a task here and nowhere else."""

from __future__ import annotations

from typing import Any

from lmcraft.tasks.classify.task import Classify
from lmcraft.tasks.contract import HeadSpec, Task
from lmcraft.tasks.qa.task import ExtractiveQA
from lmcraft.tasks.relate.task import RelationExtraction
from lmcraft.tasks.seq2seq.chat import Chat
from lmcraft.tasks.seq2seq.task import Seq2Seq
from lmcraft.tasks.tag.task import Tag

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (
        Classify,
        Tag,
        RelationExtraction,
        ExtractiveQA,
        Seq2Seq,
        Chat,
    )
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_of_head(spec: dict[str, Any]) -> type[Task] | None:
    """The task that trained a head saved as ``spec`` (config.json), or None for a pretraining head (mlm, an
    untuned lm). Heads saved before the task was stored are known by their kind."""
    if "task" in spec:
        return task_class(str(spec["task"]))
    return next((task for task in TASKS.values() if spec.get("kind") in task.head_kinds), None)


def task_from_spec(spec: dict[str, Any], pad_id: int, head: str) -> Task:
    """The task of the head named ``head`` with saved ``spec``."""
    cls = task_of_head(spec)
    if cls is None:
        raise ValueError(f"head {head!r} ({spec.get('kind')}) was not trained for a task; fine-tune it first with "
                         "`lmcraft finetune`")
    task = cls.from_spec(HeadSpec.from_json(spec, cls.name), pad_id)
    task.head = head
    return task


def option_sections() -> dict[str, type]:
    """Each registered task's options group by its section name (tasks may share one)."""
    sections: dict[str, type] = {}
    for task in TASKS.values():
        if task.options_section:
            known = sections.setdefault(task.options_section, task.Options)
            if known is not task.Options:
                raise TypeError(f"options section {task.options_section!r} is claimed by two option classes")
    return sections
