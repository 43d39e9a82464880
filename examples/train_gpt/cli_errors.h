// How pp3d-train reports bad input: command-line errors once per job (rank 0
// of the launch only) with a "did you mean" for misspelt flags, and pp3d::Error
// as one sentence for a UserError (location at PP3D_LOG_LEVEL=debug) or with
// its location for internal failures. Internal to the program.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "pp3d/core/user_error.h"

namespace pp3d::cli {

// The rank of this process as announced by the launcher (OMPI_COMM_WORLD_RANK,
// PMI_RANK, PMIX_RANK or RANK), 0 when launched alone.
int launch_rank();
// The closest flag of `app` to `typed` (e.g. "--max-steps" for "--max-step"),
// also among the space-separated names in $PP3D_EXTRA_FLAG_NAMES (./train's own
// flags); "" when none is close.
std::string closest_flag(const CLI::App& app, const std::string& typed);
// Prints a parse error (once per job) and returns the exit status (2; 0 for --help).
int report_parse_error(const CLI::App& app, const CLI::ParseError& e);
// Prints "pp3d-train: error[ on rank r]: ..." (rank < 0: no rank).
void report_error(const Error& e, int rank);

}  // namespace pp3d::cli
