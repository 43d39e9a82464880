// Umbrella header: the whole public API of pp3d.
#pragma once

#include "pp3d/version.h"
#include "pp3d/core/allocator.h"
#include "pp3d/core/device.h"
#include "pp3d/core/dtype.h"
#include "pp3d/core/error.h"
#include "pp3d/core/log.h"
#include "pp3d/core/rng.h"
#include "pp3d/core/tensor.h"
#include "pp3d/backend/backend.h"
#include "pp3d/model/gpt_config.h"
#include "pp3d/model/parameter.h"
#include "pp3d/model/gpt.h"
#include "pp3d/train/optimizer.h"
#include "pp3d/train/lr_schedule.h"
