#pragma once
// Training options declared once. Every options struct of a training task lists its fields in one
// `visit` function: JSON key, CLI flag, help line, range check. That one list drives
//   * to_json / from_json (options_to_json, options_from_json: unknown keys are errors),
//   * the CLI flags of the task's subcommand (apps/florence/run_flags.h),
//   * the resume merge: the saved options are the base, flags given again override them, and
//     per-invocation fields (test hooks, progress, threads) always come from this invocation
//     (options_overlay).
// A field is visited as f(const Field&, T& value) with T one of bool, int, int64_t, uint64_t,
// double, std::string, or a type with nlohmann to_json/from_json (then it has no generic flag).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

#include "florence/core/error.h"
#include "florence/core/json_get.h"

namespace florence::train {

struct Field {
  const char* key;             ///< JSON key (snake_case), also the name in error messages
  const char* flag = nullptr;  ///< CLI flag ("--batch-size"); nullptr: set by code / a custom flag
  const char* help = "";
  enum Check { kAny, kPositive, kNonNegative, kProbability } check = kAny;
  /// Never inherited from a saved run on resume (test hooks, progress bar, threads).
  bool per_invocation = false;
};

/// Common options of every training run (the engine's, train/run.h). Defaults are pretraining's
/// (CLIP §2.5 Adam settings); a task's options struct derives from this and sets its own
/// defaults in its constructor.
struct RunOptions {
  std::string out_dir;         ///< RUN_DIR (required)
  std::string device = "cpu";  ///< torch device string ("cpu", "cuda", "cuda:1")
  /// "fp32" or "amp_bf16" (bfloat16 autocast, float32 master weights; core/precision.h). The
  /// engine falls back to fp32 where bfloat16 would be emulated.
  std::string precision = "fp32";
  int64_t batch_size = 64;
  int64_t steps = 0;           ///< total optimiser steps (0: from epochs, or a task rule)
  int64_t epochs = 0;          ///< alternative to steps: epochs x full batches per epoch
  double lr = 5e-4;            ///< peak learning rate
  double min_lr = 0.0;         ///< end of the cosine
  int64_t warmup_steps = -1;   ///< < 0: 5% of the total steps
  double weight_decay = 0.05;  ///< AdamW decoupled weight decay (Swin / UniCL)
  double beta1 = 0.9, beta2 = 0.98, adam_eps = 1e-6;
  double grad_clip = 1.0;      ///< global L2 norm; <= 0 disables
  uint64_t seed = 0;
  int threads = 0;             ///< intra-op threads (0: OMP_NUM_THREADS, else all cores)
  int workers = 0;             ///< loader decode threads (0: all cores)
  int64_t ckpt_every = 1000;   ///< 0: only at milestones (stage ends), the end and on interruption
  int keep_checkpoints = 3;    ///< periodic checkpoints kept (milestones always kept); 0: keep all
  int64_t log_every = 10;
  /// A run directory (its checkpoints/latest) or a checkpoint .safetensors to continue; empty: a
  /// fresh run (which refuses an out_dir that already holds checkpoints).
  std::string resume;
  /// Stop (writing a checkpoint) once this many steps are done, keeping the full run's schedule.
  int64_t stop_after_steps = 0;
  /// TEST HOOK: the loss of this 1-based step is made NaN, to exercise the NaN guard. 0: off.
  int64_t debug_nan_at_step = 0;
  bool handle_signals = true;  ///< SIGINT/SIGTERM finish the step, checkpoint, return interrupted
  int progress = -1;           ///< progress bar: 1 on, 0 off, -1 when stderr is a terminal

  template <class F>
  void visit(F&& f) {
    visit_run_fields(*this, f);
  }
  template <class F>
  void visit(F&& f) const {
    visit_run_fields(*this, f);
  }

  /// Range checks of these fields (florence::Error naming the flag); `steps_or_epochs` requires
  /// exactly one of steps / epochs.
  void validate_run(bool steps_or_epochs) const;

 protected:
  template <class S, class F>
  static void visit_run_fields(S& s, F& f) {
    f(Field{"out_dir", "--out", "Run directory (config.json, metrics.jsonl, checkpoints/, model.safetensors)"},
      s.out_dir);
    f(Field{"device", "--device", "Torch device (cpu, cuda, cuda:1)"}, s.device);
    f(Field{"precision", "--precision",
            "fp32 | amp_bf16 (pretrain, finetune and video train so far: bfloat16 autocast with float32 weights, optimizer "
            "and loss; fp32 where the CPU lacks native bfloat16)"},
      s.precision);
    f(Field{"batch_size", "--batch-size", "Batch size", Field::kPositive}, s.batch_size);
    f(Field{"steps", "--steps", "Total optimizer steps"}, s.steps);
    f(Field{"epochs", "--epochs", "Total epochs (steps = epochs x full batches per epoch)"}, s.epochs);
    f(Field{"lr", "--lr", "Peak learning rate"}, s.lr);
    f(Field{"min_lr", "--min-lr", "Learning rate at the end of the cosine"}, s.min_lr);
    f(Field{"warmup_steps", "--warmup-steps", "Linear warm-up steps (default -1: 5% of the total)"}, s.warmup_steps);
    f(Field{"weight_decay", "--weight-decay",
            "AdamW decoupled weight decay (not on norms, biases, embeddings, relative position tables, logit scale)"},
      s.weight_decay);
    f(Field{"beta1", "--beta1", "AdamW beta1"}, s.beta1);
    f(Field{"beta2", "--beta2", "AdamW beta2"}, s.beta2);
    f(Field{"adam_eps", "--adam-eps", "AdamW epsilon"}, s.adam_eps);
    f(Field{"grad_clip", "--grad-clip", "Global gradient-norm clip (0 = off)"}, s.grad_clip);
    f(Field{"seed", "--seed", "Seed of init, data order, augmentation and the task's random choices"}, s.seed);
    f(Field{"threads", "--threads", "Intra-op threads (default: the global --threads / OMP_NUM_THREADS / all)",
            Field::kAny, true},
      s.threads);
    f(Field{"workers", "--workers", "Data loader decode threads (0 = all cores)"}, s.workers);
    f(Field{"ckpt_every", "--ckpt-every", "Checkpoint every N steps (0: only at stage ends / the end / a signal)"},
      s.ckpt_every);
    f(Field{"keep_checkpoints", "--keep-checkpoints",
            "Periodic checkpoints kept (stage-end ones are always kept; 0 = keep all)"},
      s.keep_checkpoints);
    f(Field{"log_every", "--log-every", "Log line every N steps when stderr is not a terminal"}, s.log_every);
    f(Field{"resume", nullptr, "", Field::kAny, true}, s.resume);
    f(Field{"stop_after_steps", "--stop-after-steps",
            "Stop with a checkpoint after this many steps, keeping the full run's schedule (resume later)",
            Field::kAny, true},
      s.stop_after_steps);
    f(Field{"debug_nan_at_step", "--debug-nan-at-step",
            "TEST HOOK: make the loss of this (1-based) step NaN to exercise the NaN guard", Field::kAny, true},
      s.debug_nan_at_step);
    f(Field{"handle_signals", nullptr, ""}, s.handle_signals);
    f(Field{"progress", nullptr, "", Field::kAny, true}, s.progress);
  }
};

/// The options as a flat JSON object (every visited field).
template <class O>
nlohmann::json options_to_json(const O& o) {
  nlohmann::json j = nlohmann::json::object();
  o.visit([&](const Field& f, const auto& v) { j[f.key] = v; });
  return j;
}

/// Reads the fields present in `j` into `o` (absent ones keep their values). Throws
/// florence::Error "<what>: unknown key 'K'" / "<what>: bad value for 'K': ..." and for a
/// non-object.
template <class O>
void options_from_json(O& o, const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw Error(what + ": expected a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    o.visit([&](const Field& f, auto& v) {
      if (known || it.key() != f.key) return;
      known = true;
      // Kind and range checked (core/json_get.h): "steps": 1e300 is an error naming the key, not
      // an unchecked cast.
      v = core::json_get<std::decay_t<decltype(v)>>(it.value(), what + ": bad value for '" + it.key() + "'");
    });
    if (!known) throw Error(what + ": unknown key '" + it.key() + "'");
  }
}

/// Base of a task's options struct: the engine's RunOptions plus the task's own fields. Derived
/// declares `static constexpr const char* kWhat` (names it in errors) and a static template
/// `visit_fields(S& s, F& f)` calling f(Field, member) per field (private is fine with
/// `friend struct TaskOptions<Derived>`); visit / to_json / from_json then need no code per task.
template <class Derived>
struct TaskOptions : RunOptions {
  template <class F>
  void visit(F&& f) {
    RunOptions::visit(f);
    Derived::visit_fields(static_cast<Derived&>(*this), f);
  }
  template <class F>
  void visit(F&& f) const {
    RunOptions::visit(f);
    Derived::visit_fields(static_cast<const Derived&>(*this), f);
  }
  nlohmann::json to_json() const { return options_to_json(static_cast<const Derived&>(*this)); }
  /// Unknown keys and values of the wrong type throw florence::Error naming the key.
  static Derived from_json(const nlohmann::json& j) {
    Derived o;
    options_from_json(o, j, Derived::kWhat);
    return o;
  }
};

/// The resume merge: `saved` with every field whose flag was given (`given(flag)`) and every
/// per-invocation field taken from `parsed`.
template <class O>
O options_overlay(const O& saved, const O& parsed, const std::function<bool(const char* flag)>& given,
                  const std::string& what) {
  nlohmann::json s = options_to_json(saved);
  const nlohmann::json p = options_to_json(parsed);
  parsed.visit([&](const Field& f, const auto&) {
    if (f.per_invocation || (f.flag && given(f.flag))) s[f.key] = p.at(f.key);
  });
  O out = saved;
  options_from_json(out, s, what);
  return out;
}

}  // namespace florence::train
