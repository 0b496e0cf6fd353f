"""Pipeline schedules as plain data: generators, validate, simulate, choose_schedule.

The same functions as <epx/pipeline.hpp>; no torch needed.
"""

from ._epx.pipeline import (  # noqa: F401
    AutoChoice,
    Costs,
    Op,
    OpKind,
    Schedule,
    ScheduleKind,
    Simulation,
    choose_schedule,
    dualpipe,
    dualpipe_v,
    gpipe,
    make_schedule,
    one_f_one_b,
    scale_costs,
    simulate,
    timeline_svg,
    validate,
    zb_h1,
)
