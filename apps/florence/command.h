#pragma once
// Subcommand registration for the `florence` CLI (CLI11). Each apps/florence/cmd_*.cpp
// defines a setup function that adds its subcommand(s) to the root app and registers it
// with FLORENCE_COMMAND(fn); main.cpp calls every registered setup in name order.
// Subcommands stay thin: parse flags, call one library function, print.
#include <CLI/CLI.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace florence::cli {

using SetupFn = std::function<void(CLI::App& root)>;

struct Registrar {
  Registrar(const char* name, SetupFn fn);
};

/// Finds the subcommand `name` of `parent`, creating it (with `description`) if absent, so
/// several files can add children to one group (`eval zero-shot`, `eval linear-probe`, ...).
CLI::App* group(CLI::App& parent, const std::string& name, const std::string& description);

/// Threads chosen by the global --threads flag (0 = default rule of configure_threads()).
int requested_threads();

/// Number checks with readable messages (CLI11's PositiveNumber prints its double range, e.g.
/// "not in range 0.000000 to 1797...": unreadable for an integer flag). CLI11 prefixes the option
/// name: "--episodes: must be > 0, got '0'".
const CLI::Validator& positive();      ///< a number > 0
const CLI::Validator& non_negative();  ///< a number >= 0

/// --precision of the adapters' inference commands (detect, vqa, video): fp32 | amp_bf16
/// (florence::adapter_autocast).
CLI::Option* add_adapter_precision(CLI::App* cmd, std::string* precision);

/// Files a command reads, by what they are ("--checkpoint", "the split's annotations"), for
/// check_output.
using NamedPaths = std::vector<std::pair<std::string, std::filesystem::path>>;

/// Checks, before any work, that the output `out` (named `what`, e.g. "--out") can be written: it
/// is not a folder, the nearest existing folder above it is a writable folder, and it is not one
/// of `inputs` (same file after resolving links and `..`): writing it would destroy that file.
/// Throws florence::Error naming both.
void check_output(const std::string& what, const std::filesystem::path& out, const NamedPaths& inputs);

/// A checkpoint and its JSON sidecar (RUN/model.safetensors and RUN/model.json), for check_output.
NamedPaths checkpoint_files(const std::string& flag, const std::filesystem::path& checkpoint);

}  // namespace florence::cli

#define FLORENCE_CLI_CONCAT2(a, b) a##b
#define FLORENCE_CLI_CONCAT(a, b) FLORENCE_CLI_CONCAT2(a, b)
#define FLORENCE_COMMAND(fn) \
  static ::florence::cli::Registrar FLORENCE_CLI_CONCAT(florence_registrar_, __COUNTER__)(#fn, fn)
