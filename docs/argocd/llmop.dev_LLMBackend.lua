-- Argo CD health of an llmop LLMBackend (llmop.dev/v1alpha1), from its kstatus conditions.
-- Healthy: Ready=True (the runtime's own API answers with every model in spec.models, or the
-- backend is Idle: spec.autoscaling scaled it to zero and the next request wakes it).
-- Degraded: Stalled=True (llmop gave up until something changes), or phase Degraded/Failed.
-- Suspended: spec.replicas 0 (nothing wakes it). Progressing: anything else, with llmop's own words.
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for llmop to observe the backend"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for llmop to observe generation " .. tostring(generation)
  return hs
end
local ready, stalled
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "Stalled" then
      stalled = condition
    end
  end
end
local phase = obj.status.phase or ""
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
if ready ~= nil and ready.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = ready.message or "replicas is 0"
  return hs
end
if phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = phase .. ": " .. ready.message
else
  hs.message = phase
end
return hs
