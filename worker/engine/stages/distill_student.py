"""An explicit distillation student (`student: {model: <ref>}`): resolved, checked and read from its config
before anything runs, so that the dry run refuses a student the losses cannot compare with the teacher,
and checks the stages after distill against the student's real shape rather than the teacher's.
"""

from __future__ import annotations

import dataclasses

from ..architecture import ModelInfo
from ..errors import EngineError, RecipeError
from ..references import ResolvedModel, read_config, resolve


def student_info(stage, teacher: ModelInfo, env) -> tuple[ResolvedModel, ModelInfo]:
    """(the student's reference, resolved once per stage; its shape as the stages after distill see it).
    `teacher` is the shape of the model being distilled (the teacher, or an earlier stage's candidate)."""
    cfg, task = stage.config, env.task
    field = f"{stage.field}.student.model"
    resolved = stage.student_model
    if resolved is None:
        try:
            resolved = resolve(cfg.student.model, roots=env.roots, base_dir=env.base_dir, work_dir=env.work_dir)
        except EngineError as exc:
            raise type(exc)(exc.message, field=field) from None
    info = ModelInfo.from_config(read_config(resolved, field))
    if info.hidden_size != teacher.hidden_size:
        # No learned projection: it would not be part of the saved student, whose embeddings the evaluation
        # compares with the teacher's as they are.
        why = []
        if task.name == "feature-extraction":
            why.append("feature-extraction matches and evaluates the student's pooled embeddings against the "
                       "teacher's")
        if cfg.hidden_states is not None:
            why.append(f"hidden-state matching ({stage.field}.hidden_states) compares hidden states element by "
                       "element")
        if why:
            raise RecipeError(f"the student's hidden size is {info.hidden_size}, the teacher's {teacher.hidden_size}: "
                              f"{'; and '.join(why)}, which needs equal widths", field=field)
    if task.per_token and info.vocab_size != teacher.vocab_size:
        raise RecipeError(f"the student's vocabulary has {info.vocab_size} tokens, the teacher's "
                          f"{teacher.vocab_size}: {task.name} distillation compares logits token by token",
                          field=field)
    if task.head_suffixes:
        trained_head = any(a.endswith(task.head_suffixes) for a in info.architectures)
        if trained_head and info.num_labels != teacher.num_labels:
            raise RecipeError(f"the student's {task.name} head has {info.num_labels} classes, the teacher's "
                              f"{teacher.num_labels}", field=field)
        # a student without the head gets a fresh one, shaped like the teacher's (Task.load's head_like)
        info = dataclasses.replace(info, num_labels=teacher.num_labels)
    return resolved, info


def load_student(stage, resolved: ResolvedModel, teacher_config, env):
    """The student's model and tokenizer (a fresh head shaped like the teacher's where the checkpoint has none);
    a refusal names the student's field, so that it is not taken for one about the teacher."""
    try:
        return env.task.load(resolved, head_like=teacher_config)
    except EngineError as exc:
        if exc.field:
            raise
        raise type(exc)(exc.message, field=f"{stage.field}.student.model") from None
