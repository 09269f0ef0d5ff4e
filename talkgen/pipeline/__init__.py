"""Plan, cache and runner: which analyses run on which subject, once, with their costs."""

from talkgen.pipeline.cache import Cache
from talkgen.pipeline.plan import Plan, PlanItem, make_plan
from talkgen.pipeline.runner import Outcome, run_plan

__all__ = ["Cache", "Plan", "PlanItem", "make_plan", "Outcome", "run_plan"]
