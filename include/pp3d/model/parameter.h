// Moved to pp3d/core/parameter.h (kept so existing includes keep compiling).
#pragma once

#include "pp3d/core/parameter.h"
