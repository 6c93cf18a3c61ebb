-- Argo CD health of an llmop ModelPull (llmop.dev/v1alpha1), from its kstatus conditions.
-- Healthy: the model is on every pod (Ready=True). Degraded: retries are used up (Stalled=True,
-- phase Failed) with the runtime's or source's own error. Progressing: pending or pulling.
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for llmop to start the pull"
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
if (stalled ~= nil and stalled.status == "True") or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = obj.status.lastError or (stalled ~= nil and stalled.message) or "the pull failed"
  return hs
end
if (ready ~= nil and ready.status == "True") or phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = (ready ~= nil and ready.message) or "pulled"
  return hs
end
hs.status = "Progressing"
local progress = obj.status.progress
if progress ~= nil and progress.summary ~= nil then
  hs.message = phase .. " " .. progress.summary
elseif ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = phase
end
return hs
