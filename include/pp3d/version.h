// pp3d version: the single source of truth, read by CMake's project().
#pragma once
#define PP3D_VERSION_MAJOR 0
#define PP3D_VERSION_MINOR 1
#define PP3D_VERSION_PATCH 0
#define PP3D_VERSION_STRING "0.1.0"
