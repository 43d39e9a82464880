// Moved to pp3d/optim/lr_schedule.h (kept so existing includes keep compiling).
#pragma once

#include "pp3d/optim/lr_schedule.h"
