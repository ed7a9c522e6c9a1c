// The retention each task must keep, as the engine applies the gates.

// gates.per_task overrides gates.min_retention.
export function required(gates, task) {
  if (!gates) return null;
  const per = gates.per_task || {};
  if (per[task] !== undefined && per[task] !== null) return Number(per[task]);
  return gates.min_retention === undefined || gates.min_retention === null ? null : Number(gates.min_retention);
}

// With the job's request: a task's own gate (tasks.<name>.gate) comes first.
export function gateOf(request, task) {
  const own = request?.tasks?.[task]?.gate;
  return own === undefined || own === null ? required(request?.gates, task) : Number(own);
}
