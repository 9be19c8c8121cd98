// The run layer shared by every training task; see run.h.
#include "florence/train/run.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "florence/core/device.h"
#include "florence/core/error.h"
#include "florence/core/files.h"
#include "florence/core/fused.h"
#include "florence/core/json_get.h"
#include "florence/core/precision.h"
#include "florence/core/threads.h"
#include "florence/model/io.h"
#include "florence/train/run_state.h"

namespace florence::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

void RunOptions::validate_run(bool steps_or_epochs) const {
  if (out_dir.empty()) throw Error("--out RUN_DIR is required");
  if (!(lr > 0)) throw Error(fmt::format("--lr must be > 0, got {}", lr));
  if (min_lr < 0 || min_lr > lr) throw Error(fmt::format("--min-lr must be in [0, lr], got {}", min_lr));
  if (weight_decay < 0) throw Error(fmt::format("--weight-decay must be >= 0, got {}", weight_decay));
  if (steps < 0) throw Error(fmt::format("--steps must be >= 1, got {}", steps));
  if (epochs < 0) throw Error(fmt::format("--epochs must be >= 1, got {}", epochs));
  if (steps > 0 && epochs > 0) throw Error("give either --steps or --epochs, not both");
  if (steps_or_epochs && steps == 0 && epochs == 0) throw Error("give --steps N or --epochs N (N >= 1)");
  if (warmup_steps < -1)
    throw Error(fmt::format("--warmup-steps must be >= 0 (or -1: 5% of the steps), got {}", warmup_steps));
  if (ckpt_every < 0) throw Error(fmt::format("--ckpt-every must be >= 0 (0 = at the end only), got {}", ckpt_every));
  if (keep_checkpoints < 0)
    throw Error(fmt::format("--keep-checkpoints must be >= 0 (0 = all), got {}", keep_checkpoints));
  if (stop_after_steps < 0)
    throw Error(fmt::format("--stop-after-steps must be >= 0 (0 = run to the end), got {}", stop_after_steps));
  if (log_every < 1) throw Error(fmt::format("--log-every must be >= 1, got {}", log_every));
  if (parse_precision(precision) == Precision::kBf16)
    throw Error("--precision bf16 (bfloat16 weights) is for inference; training takes fp32, or amp_bf16 (bfloat16 "
                "autocast, float32 master weights and optimizer state) in pretrain, finetune and video train");
}

// ---------------------------------------------------------------------------------------------
// Optimizer
// ---------------------------------------------------------------------------------------------

int64_t DataCursor::start(const Position& pos, int64_t batch) const {
  // A cursor restored for this epoch was saved right after batch pos.batches_in_epoch: it is the
  // reader's true position, whatever --batch-size the resumed run uses.
  if (epoch == pos.epoch) return item;
  return pos.batches_in_epoch * batch;
}

nlohmann::json DataCursor::to_json() const { return {{"epoch", epoch}, {"item", item}, {"skipped", skipped}}; }

DataCursor DataCursor::from_sidecar(const nlohmann::json& sidecar, const std::string& where) {
  DataCursor c;
  if (!sidecar.contains("train_state") || !sidecar["train_state"].is_object() ||
      !sidecar["train_state"].contains("data_cursor"))
    return c;
  const auto& j = sidecar["train_state"]["data_cursor"];
  const std::string at = where + ": train_state.data_cursor.";
  if (!j.is_object()) throw Error(fmt::format("{}: train_state.data_cursor is not an object", where));
  const auto field = [&](const char* key) {
    if (!j.contains(key)) throw Error(fmt::format("{}: train_state.data_cursor has no '{}'", where, key));
    return core::json_get<int64_t>(j[key], at + key);
  };
  c.epoch = field("epoch");
  c.item = field("item");
  c.skipped = field("skipped");
  if (c.epoch < 0 || c.item < 0 || c.skipped < 0)
    throw Error(fmt::format("{}: train_state.data_cursor epoch {} / item {} / skipped {} must be >= 0", where,
                            c.epoch, c.item, c.skipped));
  return c;
}

std::vector<ParamGroup> decay_groups(const torch::nn::Module& module, double lr_scale) {
  ParamGroups g = split_param_groups(module);
  return {ParamGroup{g.decay, true, lr_scale}, ParamGroup{g.no_decay, false, lr_scale}};
}

GroupedAdamW::GroupedAdamW(const std::vector<ParamGroup>& groups, double lr, double weight_decay, double beta1,
                           double beta2, double eps) {
  auto base = torch::optim::AdamWOptions(lr).betas(std::make_tuple(beta1, beta2)).eps(eps).weight_decay(weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> pg;
  for (const auto& g : groups) {
    auto o = base;
    if (!g.weight_decay) o.weight_decay(0.0);
    pg.emplace_back(g.params, std::make_unique<torch::optim::AdamWOptions>(o));
    scale_.push_back(g.lr_scale);
  }
  opt_ = std::make_unique<torch::optim::AdamW>(std::move(pg), base);
}

GroupedAdamW::~GroupedAdamW() = default;

void GroupedAdamW::set_lr(double lr) {
  auto& groups = opt_->param_groups();
  for (size_t g = 0; g < groups.size(); ++g)
    static_cast<torch::optim::AdamWOptions&>(groups[g].options()).lr(lr * scale_[g]);
}

std::unique_ptr<GroupedAdamW> make_adamw(const std::vector<ParamGroup>& groups, const RunOptions& o) {
  return std::make_unique<GroupedAdamW>(groups, o.lr, o.weight_decay, o.beta1, o.beta2, o.adam_eps);
}

std::vector<torch::Tensor> release_grads(torch::optim::AdamW& opt) {
  std::vector<torch::Tensor> released;
  if (!core::fused_kernels_enabled()) {  // LibTorch's path, for comparison
    opt.zero_grad();
    return released;
  }
  for (auto& group : opt.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) {
        p.mutable_grad().reset();
        released.push_back(p);
      }
  return released;
}

void zero_missing_grads(const std::vector<torch::Tensor>& released) {
  for (const auto& p : released)
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
}

double optimizer_step(torch::optim::AdamW& opt, const std::vector<torch::Tensor>& all, double grad_clip,
                      const std::string& context) {
  std::vector<torch::Tensor> params;
  for (const auto& p : all)
    if (p.grad().defined()) params.push_back(p);
  double gnorm;
  if (grad_clip > 0) {
    gnorm = torch::nn::utils::clip_grad_norm_(params, grad_clip);
  } else {
    std::vector<torch::Tensor> norms;
    for (auto& p : params) norms.push_back(p.grad().norm());
    gnorm = norms.empty() ? 0.0 : torch::stack(norms).norm().item<double>();
  }
  if (!std::isfinite(gnorm))
    throw Error(fmt::format("non-finite gradient norm {}; stopping without an optimizer step", context));
  adamw_step(opt);
  return gnorm;
}

LrSchedule make_schedule(const RunOptions& o, int64_t total) {
  LrSchedule s;
  s.peak_lr = o.lr;
  s.min_lr = o.min_lr;
  s.total_steps = total;
  s.warmup_steps =
      o.warmup_steps >= 0 ? std::min(o.warmup_steps, total) : int64_t(std::llround(0.05 * double(total)));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

std::string resolve_resume_checkpoint(const std::string& arg) {
  std::error_code ec;
  if (fs::is_directory(arg, ec)) {
    fs::path latest = fs::path(arg) / "checkpoints" / "latest";
    if (!fs::exists(latest)) latest = fs::path(arg) / "latest";
    if (!fs::exists(latest)) throw Error(fmt::format("--resume: no checkpoint in '{}' (no checkpoints/latest)", arg));
    std::string name = core::read_text_file(latest);
    while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
    const fs::path ckpt = latest.parent_path() / name;
    if (!fs::exists(ckpt))
      throw Error(fmt::format("--resume: '{}' names '{}', which does not exist", latest.string(), ckpt.string()));
    return ckpt.string();
  }
  if (fs::is_regular_file(arg, ec)) {
    fs::path p(arg);
    if (p.extension() == ".json") p.replace_extension(".safetensors");
    if (!fs::exists(p)) throw Error(fmt::format("--resume: checkpoint '{}' does not exist", p.string()));
    return p.string();
  }
  throw Error(fmt::format("--resume: '{}' is neither a run directory nor a checkpoint file", arg));
}

nlohmann::json load_saved_options(const std::string& arg, const SavedRunKind& k) {
  std::error_code ec;
  nlohmann::json options;
  fs::path run_dir;  // the run folder given (or holding the checkpoint given): the run continued
  if (fs::is_directory(arg, ec) && fs::exists(fs::path(arg) / "config.json")) {
    const auto j = core::read_json_file(fs::path(arg) / "config.json");
    if (!j.is_object() || (!k.config_kind.empty() && j.value("kind", "") != k.config_kind) || !j.contains("options"))
      throw Error(fmt::format("'{}/config.json' is not a {} run", arg, k.what));
    options = j.at("options");
    run_dir = arg;
  } else {
    const std::string ckpt = resolve_resume_checkpoint(arg);
    const std::string side_path = model::sidecar_path(ckpt);
    const auto side = core::read_json_file(side_path);
    const nlohmann::json::json_pointer ptr("/train_state/options");
    if (!side.is_object() || (!k.sidecar_key.empty() && !side.contains(k.sidecar_key)) ||
        (!k.sidecar_kind.empty() && side.value("kind", "") != k.sidecar_kind) || !side.contains(ptr))
      throw Error(fmt::format("'{}' is not a {} checkpoint", side_path, k.what));
    options = side[ptr];
    const fs::path parent = fs::absolute(ckpt).parent_path();
    if (fs::is_directory(arg, ec)) run_dir = arg;
    else if (parent.filename() == "checkpoints" && fs::exists(parent.parent_path() / "config.json", ec))
      run_dir = parent.parent_path();
  }
  // A run folder copied or moved elsewhere is continued where it now is, not in the folder its
  // config.json names (which may hold the original run); --out given on resume still wins.
  if (!run_dir.empty() && options.is_object()) options["out_dir"] = run_dir.lexically_normal().string();
  return options;
}

Checkpointer::Checkpointer(fs::path dir, int keep_periodic, bool writer)
    : dir_(std::move(dir)), keep_(keep_periodic), writer_(writer) {}

std::string Checkpointer::path_for(int64_t step) const {
  return (dir_ / fmt::format("step_{:07d}.safetensors", step)).string();
}

std::string Checkpointer::save(int64_t step, const torch::nn::Module& module, const model::ModelSpec& spec,
                               torch::optim::AdamW& opt, const torch::Device& device, const nlohmann::json& extra,
                               bool milestone) {
  const std::string weights = path_for(step);
  latest_ = weights;
  if (!writer_) return weights;  // same state on every rank: rank 0 writes, the others know the name
  fs::create_directories(dir_);
  core::TensorMap optim = adamw_state_dict(opt, module);
  optim["rng.torch"] = rng_state(device);
  core::save_safetensors(optim_path(weights), optim, {{"format", "florence.adamw"}});
  model::save_checkpoint(module, spec, weights, torch::kFloat, extra);
  core::write_text_atomic(dir_ / "latest", fs::path(weights).filename().string() + "\n");
  if (!milestone) periodic_.push_back(weights);
  while (keep_ > 0 && int(periodic_.size()) > keep_) {
    const std::string old = periodic_.front();
    periodic_.erase(periodic_.begin());
    if (old == latest_) continue;
    std::error_code ec;
    fs::remove(old, ec);
    fs::remove(model::sidecar_path(old), ec);
    fs::remove(optim_path(old), ec);
  }
  return weights;
}

nlohmann::json Checkpointer::restore(const std::string& ckpt, torch::nn::Module& module, const model::ModelSpec& spec,
                                     torch::optim::AdamW& opt, const torch::Device& device) {
  nlohmann::json side = core::read_json_file(model::sidecar_path(ckpt));
  core::load_state_dict(module, model::read_weights(ckpt, spec));
  const auto optim = core::load_safetensors(optim_path(ckpt));
  const int64_t restored = load_adamw_state_dict(opt, module, optim.tensors, optim_path(ckpt));
  spdlog::info("restored optimizer state of {} parameters from {}", restored, optim_path(ckpt));
  auto it = optim.tensors.find("rng.torch");
  if (it != optim.tensors.end()) set_rng_state(device, it->second);
  latest_ = ckpt;
  return side;
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

dist::DistContext TrainTask::join_process_group(const torch::Device&) { return dist::DistContext(); }

std::vector<ParamGroup> TrainTask::param_groups() { return decay_groups(module()); }

namespace {

// Ranks other than 0 log warnings and errors only (their info lines would repeat rank 0's).
class QuietScope {
 public:
  explicit QuietScope(bool quiet) : quiet_(quiet), old_(spdlog::get_level()) {
    if (quiet_ && old_ < spdlog::level::warn) spdlog::set_level(spdlog::level::warn);
  }
  ~QuietScope() {
    if (quiet_) spdlog::set_level(old_);
  }

 private:
  bool quiet_;
  spdlog::level::level_enum old_;
};

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  return fmt::format("{}m{:02d}s", t / 60, t % 60);
}

nlohmann::json schedule_json(const LrSchedule& s) {
  return {{"peak_lr", s.peak_lr}, {"min_lr", s.min_lr}, {"warmup_steps", s.warmup_steps},
          {"total_steps", s.total_steps}};
}

// metrics.jsonl: a fresh run starts it empty; a resumed one keeps the lines up to its step, and
// their losses (in file order) go to `kept_losses`, so the run's loss summary covers the whole run.
std::ofstream open_metrics(const fs::path& path, bool resumed, int64_t step, std::vector<double>& kept_losses) {
  std::error_code ec;
  if (resumed && fs::exists(path, ec)) {
    std::ifstream in(path);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (j.value("step", int64_t(0)) > step) continue;
        kept += line + "\n";
        if (j.contains("loss") && j["loss"].is_number()) kept_losses.push_back(j["loss"].get<double>());
      } catch (const nlohmann::json::exception&) {
      }
    }
    core::write_text_atomic(path, kept);
  } else if (!resumed) {
    fs::remove(path, ec);
  }
  std::ofstream out(path, std::ios::app);
  if (!out) throw Error(fmt::format("cannot write '{}'", path.string()));
  return out;
}

double unix_time() {
  return double(std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count()) /
         1000.0;
}

}  // namespace

RunResult run_task(TrainTask& task) {
  task.validate();
  const RunOptions& o = task.options();
  const auto t_start = Clock::now();
  torch::Device device = parse_device(o.device);
  // Join the process group first: a missing peer is reported before any expensive setup.
  dist::DistContext dist = task.join_process_group(device);
  QuietScope quiet(!dist.is_main());
  if (dist.distributed()) {
    spdlog::info("distributed: {}", dist.describe());
    if (device.is_cuda() && !device.has_index()) device = torch::Device(torch::kCUDA, dist.local_rank());
  }
  florence::configure_threads(o.threads);
  Precision precision = parse_precision(o.precision);
  if (precision != Precision::kFp32 && !task.supports_amp())
    throw Error(fmt::format("{} does not support --precision {} yet; use fp32", task.name(), o.precision));
  precision = resolve_precision(precision, device, task.name());
  const bool autocast = precision == Precision::kAmpBf16;
  const fs::path run_dir = o.out_dir;
  const fs::path ckpt_dir = run_dir / "checkpoints";
  fs::create_directories(run_dir);
  std::error_code ec;
  if (o.resume.empty() && fs::exists(ckpt_dir / "latest", ec))
    throw Error(fmt::format("'{}' already holds checkpoints; pass --resume to continue that run or choose another --out",
                            run_dir.string()));

  RunContext ctx{device, &dist, run_dir, dist.is_main(), t_start, precision_name(precision)};
  const int64_t total = task.setup(ctx);
  if (total <= 0) throw Error(fmt::format("{}: no training steps", task.name()));
  std::unique_ptr<GroupedAdamW> opt = make_adamw(task.param_groups(), o);
  const LrSchedule sched = make_schedule(o, total);

  Checkpointer ckpt(ckpt_dir, o.keep_checkpoints, dist.is_main());
  Position pos;
  if (!o.resume.empty()) {
    const std::string path = resolve_resume_checkpoint(o.resume);
    const nlohmann::json head = core::read_json_file(model::sidecar_path(path));
    if (!head.contains("train_state"))
      throw Error(fmt::format("'{}' is not a {} checkpoint (no train_state)", path, task.name()));
    task.check_resume(head, path);
    const nlohmann::json side = ckpt.restore(path, task.module(), task.spec(), opt->adamw(), device);
    const auto& st = side.at("train_state");
    const std::string where = model::sidecar_path(path) + ": train_state.";
    pos.step = core::json_get<int64_t>(st.at("step"), where + "step");
    pos.epoch = core::json_get<int64_t>(st.at("epoch"), where + "epoch");
    pos.batches_in_epoch = core::json_get<int64_t>(st.at("batches_in_epoch"), where + "batches_in_epoch");
    if (pos.step < 0 || pos.epoch < 0 || pos.batches_in_epoch < 0)
      throw Error(fmt::format("{}: train_state step {} / epoch {} / batches_in_epoch {} must be >= 0",
                              model::sidecar_path(path), pos.step, pos.epoch, pos.batches_in_epoch));
    if (st.contains("schedule") && st["schedule"] != schedule_json(sched))
      spdlog::warn("resume: the schedule differs from the checkpoint's ({}); continuing with the new one",
                   st["schedule"].dump());
    spdlog::info("resumed from {} at step {} (epoch {}, {} batches into it)", path, pos.step, pos.epoch,
                 pos.batches_in_epoch);
  }
  // The plan after the resume checks, so a refused resume prints only its error.
  const std::string plan = task.plan();
  spdlog::info("plan: {} steps{}, batch {}, lr {} warm-up {} then cosine to {}, {}", total,
               plan.empty() ? std::string() : " (" + plan + ")", o.batch_size, sched.peak_lr, sched.warmup_steps,
               sched.min_lr, precision_name(precision));
  // Same starting point on every rank (fresh: same seed already; resumed: same file), enforced.
  dist::broadcast_parameters(dist, task.module());
  if (dist.is_main()) {
    task.write_files();
    nlohmann::json cfg = task.config();
    cfg["options"] = task.options_json();
    // What ran: options.precision is what was asked, this is what the machine gave (fp32 where
    // bfloat16 would be emulated; core/precision.h).
    cfg["precision"] = precision_name(precision);
    cfg["model"] = model::spec_to_json(task.spec());
    cfg["total_steps"] = total;
    cfg["schedule"] = schedule_json(sched);
    cfg["world_size"] = dist.world_size();
    cfg["distributed"] = dist.describe();
    core::write_text_atomic(run_dir / "config.json", cfg.dump(2) + "\n");
  }
  std::ofstream metrics;
  std::vector<double> earlier_losses;  // the steps before a resume (main rank: from metrics.jsonl)
  if (dist.is_main()) metrics = open_metrics(run_dir / "metrics.jsonl", !o.resume.empty(), pos.step, earlier_losses);

  const int64_t W = dist.world_size();
  const bool bar = dist.is_main() && (o.progress == 1 || (o.progress < 0 && isatty(STDERR_FILENO)));
  bool bar_open = false;  // a progress line without its newline is on stderr
  StopSignalScope signals(o.handle_signals);
  RunResult res;
  res.run_dir = run_dir.string();
  res.start_step = pos.step;
  res.total_steps = total;
  res.rank = dist.rank();
  res.world_size = int(W);
  std::vector<double> losses;
  double ema_step_s = 0;
  bool opened = false;
  const auto t_loop = Clock::now();
  while (pos.step < total) {
    const auto t0 = Clock::now();
    if (!opened) {
      task.open_epoch(pos);
      opened = true;
    }
    if (!task.next_batch(pos)) {
      // Tasks without a loader summary (vqa, detect) say nothing here rather than an empty line.
      if (const std::string summary = task.data_summary(); !summary.empty()) spdlog::info("data: {}", summary);
      if (pos.batches_in_epoch == 0)
        throw Error(fmt::format("the data yields no full batch of {} (epoch {}: {})", o.batch_size, pos.epoch,
                                task.data_summary()));
      ++pos.epoch;
      pos.batches_in_epoch = 0;
      task.open_epoch(pos);
      if (!task.next_batch(pos)) throw Error(fmt::format("epoch {} yields no full batch", pos.epoch));
    }
    const double wait_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double comm_before = dist.stats().seconds;

    const double lr = sched.at(pos.step);
    opt->set_lr(lr);
    const std::vector<torch::Tensor> released = release_grads(opt->adamw());  // zero_grad, without the passes
    StepOutput out;
    {
      AutocastGuard amp(autocast, device);  // forward and backward; the losses run in float32 (NoAutocastGuard)
      out = task.step(pos);
    }
    zero_missing_grads(released);
    double loss = out.loss;
    if (o.debug_nan_at_step > 0 && pos.step + 1 == o.debug_nan_at_step) loss = std::nan("");
    // Mean loss over ranks and whether any rank was asked to stop, in one collective.
    bool stop_requested = StopSignalScope::signal() != 0;
    if (dist.distributed()) {
      std::vector<torch::Tensor> agree{torch::tensor({loss, stop_requested ? 1.0 : 0.0}, torch::kFloat64)};
      dist.allreduce(agree, dist::ReduceOp::kSum);
      loss = agree[0][0].item<double>() / double(W);
      stop_requested = agree[0][1].item<double>() > 0;
    }
    const std::string latest_msg = ckpt.latest().empty() ? std::string("no checkpoint was written yet")
                                                         : "latest good checkpoint: " + ckpt.latest();
    if (!std::isfinite(loss))
      throw Error(fmt::format("non-finite loss ({}) at step {} (epoch {}); stopping without an optimizer step. {}. "
                              "Lower --lr or raise --warmup-steps and --resume.",
                              loss, pos.step + 1, pos.epoch, latest_msg));
    const std::vector<torch::Tensor> params = task.module().parameters();
    dist::allreduce_gradients(dist, params);  // mean over ranks (no-op alone)
    const double gnorm = optimizer_step(opt->adamw(), params, o.grad_clip,
                                        fmt::format("at step {} (loss {}). {}", pos.step + 1, loss, latest_msg));
    ++pos.step;
    ++pos.batches_in_epoch;
    losses.push_back(loss);

    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double rate = double(out.samples) / std::max(step_s, 1e-9);
    ema_step_s = losses.size() == 1 ? step_s : 0.9 * ema_step_s + 0.1 * step_s;
    nlohmann::json m = out.metrics;
    m.update({{"step", pos.step},
              {"epoch", pos.epoch},
              {"loss", loss},
              {"lr", lr},
              {"grad_norm", gnorm},
              {"img_per_s", rate},
              {"data_wait_fraction", std::min(1.0, wait_s / std::max(step_s, 1e-9))},
              {"world_size", W},
              {"comm_s", dist.stats().seconds - comm_before},
              {"time", std::chrono::duration<double>(Clock::now() - t_loop).count()},
              {"unix_time", unix_time()}});
    task.after_step(pos, m);
    if (dist.is_main()) {
      metrics << m.dump() << "\n";
      metrics.flush();
    }
    const double eta = ema_step_s * double(total - pos.step);
    const std::string tag = out.tag.empty() ? std::string() : " " + out.tag;
    if (bar) {
      const int width = 24;
      const int filled = int(double(width) * double(pos.step) / double(total));
      std::fprintf(stderr, "\r[%s%s] %lld/%lld%s  loss %.4f  %.1f img/s  ETA %s   ",
                   std::string(size_t(filled), '#').c_str(), std::string(size_t(width - filled), '.').c_str(),
                   (long long)pos.step, (long long)total, tag.c_str(), loss, rate, format_duration(eta).c_str());
      std::fflush(stderr);
      bar_open = true;
    } else if (pos.step % o.log_every == 0 || pos.step == total || losses.size() == 1) {
      spdlog::info("step {}/{}{} epoch {}: loss {:.4f} lr {:.3g} grad {:.3g}{} {:.1f} img/s data-wait {:.0f}% ETA {}",
                   pos.step, total, tag, pos.epoch, loss, lr, gnorm, out.extra.empty() ? "" : " " + out.extra, rate,
                   100.0 * std::min(1.0, wait_s / std::max(step_s, 1e-9)), format_duration(eta));
    }

    const bool milestone = task.is_milestone(pos.step);
    const bool stop_here = o.stop_after_steps > 0 && pos.step >= o.stop_after_steps && pos.step < total;
    const bool periodic = o.ckpt_every > 0 && pos.step % o.ckpt_every == 0;
    if (milestone || stop_requested || stop_here || periodic || pos.step == total) {
      if (bar_open) std::fprintf(stderr, "\n");
      bar_open = false;
      nlohmann::json state = task.train_state(pos);
      state.update({{"step", pos.step},
                    {"epoch", pos.epoch},
                    {"batches_in_epoch", pos.batches_in_epoch},
                    {"total_steps", total},
                    {"loss", loss},
                    {"seed", o.seed},
                    {"world_size", W},
                    {"schedule", schedule_json(sched)},
                    {"options", task.options_json()}});
      const std::string path = ckpt.path_for(pos.step);
      state["rng"] = "rng.torch in " + fs::path(optim_path(path)).filename().string();
      nlohmann::json extra = task.checkpoint_extra();
      extra["train_state"] = state;
      ckpt.save(pos.step, task.module(), task.spec(), opt->adamw(), device, extra, milestone);
      spdlog::info("checkpoint {} (step {}/{})", path, pos.step, total);
    }
    if (stop_requested || stop_here) {
      if (stop_requested)
        spdlog::warn("stop requested (signal {} here{}): stopped after step {} with checkpoint {}",
                     StopSignalScope::signal(), dist.distributed() ? ", or on another rank" : "", pos.step,
                     ckpt.latest());
      res.interrupted = true;
      break;
    }
  }
  if (bar_open) std::fprintf(stderr, "\n");
  res.steps_done = pos.step;
  res.last_checkpoint = ckpt.latest();
  if (!losses.empty()) {
    res.first_loss = losses.front();
    res.last_loss = losses.back();
  }
  // The means cover the whole run: a resumed run's earlier steps (metrics.jsonl) come first, so
  // resuming (even a finished run) reports what the uninterrupted run would.
  std::vector<double> history = earlier_losses;
  history.insert(history.end(), losses.begin(), losses.end());
  if (!history.empty()) {
    const size_t n = std::min<size_t>(10, history.size());
    for (size_t i = 0; i < n; ++i) {
      res.first_loss_mean += history[i] / double(n);
      res.last_loss_mean += history[history.size() - 1 - i] / double(n);
    }
  }
  if (!res.interrupted) {
    if (dist.is_main()) {
      nlohmann::json extra = task.final_extra();
      extra["train_state"] = {{"step", pos.step}, {"options", task.options_json()}};
      res.final_weights = (run_dir / "model.safetensors").string();
      model::save_checkpoint(task.module(), task.spec(), res.final_weights, torch::kFloat, extra);
      spdlog::info("done: {} steps, final weights in {}", pos.step, res.final_weights);
    }
    task.finish(res);
  }
  res.comm_seconds = dist.stats().seconds;
  res.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  return res;
}

}  // namespace florence::train
