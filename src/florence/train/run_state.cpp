// Training-run state helpers; see run_state.h.
#include "florence/train/run_state.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <mutex>
#include <sstream>
#include <type_traits>
#include <unordered_set>

#include "florence/core/error.h"
#include "florence/core/fused.h"
#include "florence/train/seeding.h"

namespace florence::train {

std::string optim_path(const std::string& weights_path) {
  std::string p = weights_path;
  const std::string ext = ".safetensors";
  if (p.size() > ext.size() && p.compare(p.size() - ext.size(), ext.size(), ext) == 0) p.resize(p.size() - ext.size());
  return p + ".optim.safetensors";
}

namespace {

// The key AdamW's state map uses for `p`, in whichever type this LibTorch declares.
template <class Map>
typename Map::key_type state_key(const torch::Tensor& p) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;
    os << static_cast<const void*>(p.unsafeGetTensorImpl());
    return os.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

std::atomic<int> g_stop_signal{0};

extern "C" void florence_on_stop_signal(int sig) {
  if (g_stop_signal.load() != 0) {  // second signal: give up at once with the default action
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_signal.store(sig);
}

}  // namespace

core::TensorMap adamw_state_dict(torch::optim::AdamW& opt, const torch::nn::Module& module) {
  auto& state = opt.state();
  using Map = std::decay_t<decltype(state)>;
  core::TensorMap out;
  for (const auto& item : module.named_parameters(true)) {
    auto it = state.find(state_key<Map>(item.value()));
    if (it == state.end()) continue;
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    out[item.key() + ".exp_avg"] = s.exp_avg();
    out[item.key() + ".exp_avg_sq"] = s.exp_avg_sq();
    out[item.key() + ".step"] = torch::tensor(int64_t(s.step()), torch::kInt64);
  }
  if (out.empty() && !state.empty()) {
    throw Error("internal: the optimizer state could not be matched to parameter names (LibTorch key format)");
  }
  return out;
}

int64_t load_adamw_state_dict(torch::optim::AdamW& opt, const torch::nn::Module& module, const core::TensorMap& saved,
                              const std::string& origin) {
  auto& state = opt.state();
  using Map = std::decay_t<decltype(state)>;
  state.clear();
  int64_t restored = 0;
  for (const auto& item : module.named_parameters(true)) {
    auto a = saved.find(item.key() + ".exp_avg");
    auto b = saved.find(item.key() + ".exp_avg_sq");
    auto c = saved.find(item.key() + ".step");
    if (a == saved.end() && b == saved.end() && c == saved.end()) continue;
    if (a == saved.end() || b == saved.end() || c == saved.end()) {
      throw Error(fmt::format("optimizer state '{}': incomplete entry for parameter '{}'", origin, item.key()));
    }
    const torch::Tensor& p = item.value();
    if (a->second.sizes() != p.sizes() || b->second.sizes() != p.sizes()) {
      throw Error(fmt::format("optimizer state '{}': shape mismatch for parameter '{}'", origin, item.key()));
    }
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(c->second.item<int64_t>());
    s->exp_avg(a->second.to(p.device(), p.scalar_type()).clone());
    s->exp_avg_sq(b->second.to(p.device(), p.scalar_type()).clone());
    state[state_key<Map>(p)] = std::move(s);
    ++restored;
  }
  return restored;
}

void adamw_step(torch::optim::AdamW& opt) {
  auto& state = opt.state();
  using Map = std::decay_t<decltype(state)>;
  struct Segment {
    torch::Tensor p, g, m, v;
    core::AdamWScalars scalars;
  };
  if (!core::fused_kernels_enabled()) {
    opt.step();
    return;
  }
  std::vector<Segment> segs;
  const auto fits = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.layout() == torch::kStrided &&
           t.is_contiguous();
  };
  const auto libtorch_step = [&opt](const char* why) {
    static std::once_flag said;
    std::call_once(said, [why] { spdlog::info("AdamW: LibTorch's per-tensor step ({})", why); });
    opt.step();
  };
  // First pass: check that the fused path applies to everything before touching any state.
  std::unordered_set<const void*> seen;  // a parameter listed twice would be updated twice at once
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    if (o.amsgrad()) return libtorch_step("AMSGrad");
    for (auto& p : group.params()) {
      const auto& g = p.grad();
      if (!g.defined()) continue;
      if (!fits(p) || !fits(g) || g.sizes() != p.sizes())
        return libtorch_step("a parameter or gradient is not a contiguous float32 CPU tensor");
      if (!seen.insert(p.unsafeGetTensorImpl()).second) return libtorch_step("a parameter is listed twice");
      auto it = state.find(state_key<Map>(p));
      if (it != state.end()) {
        const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        if (!fits(s.exp_avg()) || !fits(s.exp_avg_sq()) || s.exp_avg().sizes() != p.sizes() ||
            s.exp_avg_sq().sizes() != p.sizes())
          return libtorch_step("the optimizer state is not contiguous float32 CPU tensors");
      }
    }
  }
  std::vector<int64_t> offsets{0};
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = state[state_key<Map>(p)];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        slot = std::move(fresh);
      }
      auto& s = static_cast<torch::optim::AdamWParamState&>(*slot);
      s.step(s.step() + 1);
      core::AdamWScalars sc;
      sc.lr = o.lr();
      sc.beta1 = std::get<0>(o.betas());
      sc.beta2 = std::get<1>(o.betas());
      sc.eps = o.eps();
      sc.weight_decay = o.weight_decay();
      sc.step = s.step();
      segs.push_back({p, p.grad(), s.exp_avg(), s.exp_avg_sq(), sc});
      offsets.push_back(offsets.back() + p.numel());
    }
  }
  if (segs.empty()) return;
  // All parameters as one range of elements, so small tensors do not each pay a parallel region.
  at::parallel_for(0, offsets.back(), 32768, [&](int64_t lo, int64_t hi) {
    size_t k = size_t(std::upper_bound(offsets.begin(), offsets.end(), lo) - offsets.begin()) - 1;
    for (; k < segs.size() && offsets[k] < hi; ++k) {
      const int64_t a = std::max(lo, offsets[k]) - offsets[k];
      const int64_t b = std::min(hi, offsets[k + 1]) - offsets[k];
      if (b <= a) continue;
      Segment& s = segs[k];
      core::adamw_update(s.p.data_ptr<float>() + a, s.g.data_ptr<float>() + a, s.m.data_ptr<float>() + a,
                         s.v.data_ptr<float>() + a, b - a, s.scalars);
    }
  });
  for (auto& s : segs) {  // in-place writes, as p.addcdiv_ would record them
    s.p.unsafeGetTensorImpl()->bump_version();
    s.m.unsafeGetTensorImpl()->bump_version();
    s.v.unsafeGetTensorImpl()->bump_version();
  }
}

torch::Tensor rng_state(const torch::Device& device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const torch::Device& device, const torch::Tensor& s) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
}

StopSignalScope::StopSignalScope(bool enable) : enabled_(enable) {
  g_stop_signal.store(0);
  if (!enabled_) return;
  struct sigaction sa {};
  sa.sa_handler = florence_on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int_);
  sigaction(SIGTERM, &sa, &old_term_);
}

StopSignalScope::~StopSignalScope() {
  if (!enabled_) return;
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

int StopSignalScope::signal() { return g_stop_signal.load(); }

void seed_model_init(uint64_t run_seed) { torch::manual_seed(seed_mix({kTagInit, run_seed}) >> 1); }

}  // namespace florence::train
