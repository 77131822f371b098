-- Argo CD health of a voiceops.dev ModelAsset, read from the conditions the operator sets.
-- Argo runs this in gopher-lua (Lua 5.1) without the string and math libraries, so only
-- `..`, tostring and ipairs are used.
local hs = {}
local status = obj.status or {}
local generation = obj.metadata.generation
local observed = status.observedGeneration

-- Until the operator has seen the current spec, every condition describes an older one.
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  else
    hs.message = "waiting for the operator to observe the spec"
  end
  if observed ~= nil then
    hs.message = hs.message .. " (status is for generation " .. tostring(observed) .. ")"
  end
  return hs
end

-- A condition stamped with an older generation was left over: it does not count.
local function condition(kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then
      if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
        return nil
      end
      return c
    end
  end
  return nil
end

local function is(c, value)
  return c ~= nil and c.status == value
end

local function text(c)
  if c.message == nil or c.message == "" then
    return c.reason or c.type
  end
  return c.message
end

local function describe(c)
  if c.message == nil or c.message == "" then
    return c.reason or c.type
  end
  return (c.reason or c.type) .. ": " .. c.message
end

local ready = condition("Ready")
local downloading = condition("Downloading")
local failed = condition("Failed")

-- A failed version is not retried until the spec changes, so it needs a human even when an
-- older version still serves (the operator's message then ends with "still serving ...").
if is(failed, "True") then
  hs.status = "Degraded"
  hs.message = describe(failed)
  return hs
end

if is(downloading, "True") then
  hs.status = "Progressing"
  hs.message = describe(downloading)
  local progress = status.progress
  if progress ~= nil and progress.percent ~= nil and (progress.totalBytes or 0) > 0 then
    hs.message = hs.message .. " (" .. tostring(progress.percent) .. "%)"
  end
  return hs
end

if is(ready, "True") then
  hs.status = "Healthy"
  hs.message = text(ready)
  return hs
end

if is(ready, "False") then
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end

if is(ready, "Unknown") then
  hs.status = "Unknown"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = "waiting for the operator to report Ready"
return hs
