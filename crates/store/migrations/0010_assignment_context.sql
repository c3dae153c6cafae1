-- The context of an assignment: the attributes an experiment declares
-- (`assignment.context`: app version, platform, country, …) as the request that first
-- assigned the subject carried them, a JSON object; NULL when none was declared or given
-- (every assignment stored before).
ALTER TABLE assignments ADD COLUMN context TEXT;
