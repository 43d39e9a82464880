# Decides whether the CUDA backend is built (PP3D_HAVE_CUDA) from PP3D_WITH_CUDA:
#   AUTO: build it when nvcc, cuBLAS, NCCL and cuDNN are all found;
#   ON:   require them (a missing piece is a configure error, never a silent fallback);
#   OFF:  do not build it.
set(PP3D_HAVE_CUDA OFF)
string(TOUPPER "${PP3D_WITH_CUDA}" _want)
if(_want STREQUAL "OFF" OR _want STREQUAL "FALSE" OR _want STREQUAL "0")
  return()
endif()
set(_required OFF)
if(NOT _want STREQUAL "AUTO")
  set(_required ON)
endif()

include(CheckLanguage)
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(_required)
    message(FATAL_ERROR "PP3D_WITH_CUDA=ON but no CUDA compiler (nvcc) was found. Install the CUDA toolkit, "
                        "set CMAKE_CUDA_COMPILER, or configure with -DPP3D_WITH_CUDA=OFF (or AUTO).")
  endif()
  message(STATUS "pp3d: nvcc not found, building without CUDA")
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "80;90")
endif()
set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 has no CUDA20 flag for nvcc
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
find_package(NCCL)
find_package(CUDNN)
if(NOT NCCL_FOUND OR NOT CUDNN_FOUND)
  if(_required)
    message(FATAL_ERROR "PP3D_WITH_CUDA=ON: NCCL found=${NCCL_FOUND}, cuDNN found=${CUDNN_FOUND}. "
                        "Point NCCL_ROOT / CUDNN_ROOT at their install prefixes.")
  endif()
  message(STATUS "pp3d: NCCL or cuDNN missing (NCCL=${NCCL_FOUND}, cuDNN=${CUDNN_FOUND}), building without CUDA")
  return()
endif()
set(PP3D_HAVE_CUDA ON)
