-- Argo CD health of an aidc.io InferenceService (resource.customizations.health.aidc.io_InferenceService).
-- Healthy when the Ready condition is True for the current generation, Degraded when the phase is
-- Failed, Progressing otherwise (resolving the model, rolling out, or not yet seen by the operator).
local hs = {}

local function find_condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the aidc operator to observe the service"
  return hs
end

local ready = find_condition(obj.status, "Ready")
local generation = obj.metadata.generation

if obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (ready ~= nil and ready.message) or "Failed"
elseif ready ~= nil and ready.status == "True" then
  if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to roll out generation " .. tostring(generation)
  else
    hs.status = "Healthy"
    hs.message = ready.message
    if obj.status.url ~= nil then
      hs.message = "Serving at " .. obj.status.url
    end
  end
else
  hs.status = "Progressing"
  hs.message = (ready ~= nil and ready.message) or obj.status.phase or "Pending"
end
return hs
