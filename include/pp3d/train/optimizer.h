// Moved to pp3d/optim/optimizer.h (kept so existing includes keep compiling).
#pragma once

#include "pp3d/optim/optimizer.h"
