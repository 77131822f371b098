-- Argo CD health of a voiceops.dev VoiceAgent, read from the conditions the operator sets.
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

-- A condition stamped with an older generation was left over (e.g. by the invalid-spec
-- path, which sets only Ready and Degraded): it does not count.
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
local progressing = condition("Progressing")
local degraded = condition("Degraded")
local rolledBack = condition("RolledBack")

-- Checked first: a rolled-back agent is Ready (its last good revision serves) and still
-- needs a human, because the spec it asked for did not come up.
if is(degraded, "True") or is(rolledBack, "True") then
  hs.status = "Degraded"
  if is(degraded, "True") then
    hs.message = describe(degraded)
  else
    hs.message = describe(rolledBack)
  end
  if is(ready, "True") then
    hs.message = hs.message .. "; the agent still serves"
  end
  return hs
end

if is(progressing, "True") then
  hs.status = "Progressing"
  hs.message = describe(progressing)
  return hs
end

if is(ready, "True") then
  hs.status = "Healthy"
  hs.message = text(ready)
  local components = status.components or {}
  local serving = ""
  for _, stage in ipairs({ "stt", "llm", "tts" }) do
    local s = components[stage]
    if s ~= nil and s.serving ~= nil then
      if serving ~= "" then
        serving = serving .. ", "
      end
      serving = serving .. stage .. " " .. s.serving
    end
  end
  if serving ~= "" then
    hs.message = hs.message .. " (" .. serving .. ")"
  end
  return hs
end

-- Not ready and nothing failed: a gateway or engine still starting, a model on its way.
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
