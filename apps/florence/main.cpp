// florence: the command-line front end. Global flags: --threads, --log-level.
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <vector>

#include "command.h"
#include "florence/core/error.h"
#include "florence/core/threads.h"

namespace florence::cli {
namespace {
std::vector<std::pair<std::string, SetupFn>>& registry() {
  static std::vector<std::pair<std::string, SetupFn>> r;
  return r;
}
int g_threads = 0;
}  // namespace

Registrar::Registrar(const char* name, SetupFn fn) { registry().emplace_back(name, std::move(fn)); }

CLI::App* group(CLI::App& parent, const std::string& name, const std::string& description) {
  for (CLI::App* sub : parent.get_subcommands([](CLI::App*) { return true; })) {
    if (sub->get_name() == name) return sub;
  }
  CLI::App* sub = parent.add_subcommand(name, description);
  sub->require_subcommand(1);
  return sub;
}

int requested_threads() { return g_threads; }

namespace {
// A validator accepting numbers for which `ok` holds; `what` completes "must be ...".
CLI::Validator number_check(bool (*ok)(double), const std::string& what, const std::string& name) {
  return CLI::Validator(
      [ok, what](std::string& text) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return "must be a number, got '" + text + "'";
        if (!ok(v)) return "must be " + what + ", got '" + text + "'";
        return std::string();
      },
      name, name);
}
}  // namespace

const CLI::Validator& positive() {
  static const CLI::Validator v = number_check([](double x) { return x > 0; }, "> 0", "POSITIVE");
  return v;
}

const CLI::Validator& non_negative() {
  static const CLI::Validator v = number_check([](double x) { return x >= 0; }, ">= 0", "NONNEGATIVE");
  return v;
}

void check_output(const std::string& what, const std::filesystem::path& out, const NamedPaths& inputs) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (out.empty()) throw Error(what + " is empty");
  if (fs::is_directory(out, ec)) throw Error(fmt::format("{} '{}' is a folder; give a file name", what, out.string()));
  fs::path dir = fs::absolute(out, ec).parent_path();
  while (!dir.empty() && !fs::exists(dir, ec) && dir != dir.parent_path()) dir = dir.parent_path();
  if (!fs::is_directory(dir, ec))
    throw Error(fmt::format("{} '{}' cannot be written: '{}' is not a folder", what, out.string(), dir.string()));
  if (::access(dir.c_str(), W_OK) != 0)
    throw Error(fmt::format("{} '{}' cannot be written: folder '{}' is not writable", what, out.string(), dir.string()));
  const fs::path o = fs::weakly_canonical(out, ec);
  for (const auto& [name, in] : inputs) {
    if (in.empty()) continue;
    if (fs::weakly_canonical(in, ec) == o)
      throw Error(fmt::format("{} '{}' is {} ('{}'): writing it would destroy that file; choose another", what,
                              out.string(), name, in.string()));
  }
}

NamedPaths checkpoint_files(const std::string& flag, const std::filesystem::path& checkpoint) {
  return {{flag, checkpoint}, {flag + "'s sidecar", std::filesystem::path(checkpoint).replace_extension(".json")}};
}

CLI::Option* add_adapter_precision(CLI::App* cmd, std::string* precision) {
  return cmd
      ->add_option("--precision", *precision,
                   "fp32 | amp_bf16 (bfloat16 autocast, float32 weights; fp32 where the CPU lacks bfloat16); bf16 "
                   "weights are not offered for the adapters")
      ->capture_default_str()
      // bf16 passes here so that core::adapter_autocast refuses it with the reason.
      ->check(CLI::IsMember({"fp32", "bf16", "amp_bf16"}));
}

}  // namespace florence::cli

int main(int argc, char** argv) {
  using namespace florence;
  // Logs go to stderr: stdout carries command output (JSON lines of `tokenize`, `classify --json`, ...).
  spdlog::set_default_logger(spdlog::stderr_color_mt("florence"));
  CLI::App app{"florence: Florence vision foundation model (CoSwin + text tower, UniCL) in C++"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print help for every subcommand");
  std::string log_level = "info";
  app.add_option("--threads", cli::g_threads,
                 "Intra-op threads (default: OMP_NUM_THREADS, else all cores)")
      ->check(cli::non_negative());
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.parse_complete_callback([&] {
    spdlog::set_level(spdlog::level::from_str(log_level));
    configure_threads(cli::g_threads);
  });

  auto& reg = cli::registry();
  std::sort(reg.begin(), reg.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [name, fn] : reg) fn(app);

  // Name an unknown command (CLI11 would only say "A subcommand is required"): the first word that
  // is neither a global flag nor its value.
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" || a == "--log-level") {
      ++i;
      continue;
    }
    if (a.rfind("-", 0) == 0) continue;
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      known = known || sub->get_name() == a;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::cerr << "error: unknown command '" << a << "' (commands: " << names << ")\n";
      return 2;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --help-all
    // Flag errors follow the same rule as every other error: "error: ..." and status 2.
    std::cerr << "error: " << e.what() << "\n(run with --help for the usage)\n";
    return 2;
  } catch (const florence::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory (std::bad_alloc): a size in the input or the model config is larger than this "
                 "machine can hold\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
