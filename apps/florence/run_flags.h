#pragma once
// CLI flags of a training task, from its options' field table (train/options.h): every field with
// a flag becomes a CLI11 option (bool: a flag) with its help line, default and range check, and
// the resume merge ("flags given again override the saved options") reads the same table.
// Header-only helper for the training subcommands (cmd_pretrain.cpp, cmd_finetune.cpp, ...).
#include <CLI/CLI.hpp>

#include <string>
#include <type_traits>

#include "command.h"
#include "florence/train/options.h"

namespace florence::cli {

/// Adds one option per flagged field of `o` (which must outlive the parse) to `cmd`.
template <class O>
void add_run_flags(CLI::App* cmd, O& o) {
  o.visit([&](const train::Field& f, auto& v) {
    using T = std::decay_t<decltype(v)>;
    if (!f.flag) return;
    CLI::Option* opt = nullptr;
    if constexpr (std::is_same_v<T, bool>) {
      opt = cmd->add_flag(f.flag, v, f.help);
    } else if constexpr (std::is_arithmetic_v<T> || std::is_same_v<T, std::string>) {
      opt = cmd->add_option(f.flag, v, f.help)->capture_default_str();
    } else {
      return;  // structured fields get a flag of their own in the command
    }
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      switch (f.check) {
        case train::Field::kPositive: opt->check(positive()); break;
        case train::Field::kNonNegative: opt->check(non_negative()); break;
        case train::Field::kProbability: opt->check(CLI::Number)->check(CLI::Range(0.0, 1.0)); break;
        case train::Field::kAny: break;
      }
    }
  });
}

/// The options to resume with: `saved` (the run's), overridden by every field of `parsed` whose
/// flag was given on this command line, and by the per-invocation fields.
template <class O>
O resume_merge(CLI::App* cmd, const O& saved, const O& parsed) {
  return train::options_overlay(saved, parsed, [&](const char* flag) { return cmd->count(flag) > 0; },
                                "resume options");
}

}  // namespace florence::cli
