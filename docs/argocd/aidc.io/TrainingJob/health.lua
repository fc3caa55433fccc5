-- Argo CD health of an aidc.io TrainingJob (resource.customizations.health.aidc.io_TrainingJob).
-- Healthy once it Succeeded, Degraded when it Failed, Suspended while suspended (spec.runPolicy.suspend),
-- Progressing otherwise: pending, queued, running, restarting, or not yet seen by the operator.
local hs = {}

local function true_condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == kind and condition.status == "True" then
      return condition
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the aidc operator to observe the job"
  return hs
end

local phase = obj.status.phase
local succeeded = true_condition(obj.status, "Succeeded")
local failed = true_condition(obj.status, "Failed")

if succeeded ~= nil or phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = (succeeded ~= nil and succeeded.message) or "Succeeded"
elseif failed ~= nil or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (failed ~= nil and failed.message) or "Failed"
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended: spec.runPolicy.suspend is true"
else
  hs.status = "Progressing"
  hs.message = phase
  if obj.status.ready ~= nil then
    hs.message = hs.message .. " (" .. obj.status.ready .. " ranks running)"
  end
  local progress = obj.status.progress
  if progress ~= nil and progress.percent ~= nil then
    hs.message = hs.message .. ", " .. tostring(progress.percent) .. "% done"
  end
end
return hs
