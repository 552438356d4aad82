-- The image an agent built (or found already built: a cache hit) for a run's git or
-- code job, and the agent's builder (docker, kaniko, buildah…): reported with
-- `starting` and shown with the run. NULL until then, and for runs that name an image.
-- Written only by `store::runs::transition` with COALESCE, so a later report without
-- it keeps it; a re-queued run keeps the value of its last attempt until a new attempt
-- builds again and overwrites it. `built_cache_hit` is 0/1 like the other flags.
ALTER TABLE runs ADD COLUMN built_image TEXT;
ALTER TABLE runs ADD COLUMN built_cache_hit INTEGER;
ALTER TABLE runs ADD COLUMN built_builder TEXT;
