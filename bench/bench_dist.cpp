// Data-parallel pretraining throughput: 1 process (all threads) vs `florence launch --nproc 2`
// (threads split between the processes) for florence-nano and florence-t on the real Emoji shards,
// and the fraction of rank 0's step time spent in collectives. Not a test: prints a table.
//
//   bench_dist [--cli PATH] [--shards DIR] [--models florence-nano,florence-t] [--steps N,M]
//              [--batch B,C] [--warmup K] [--threads T] [--out DIR]
//
// Throughput counts the global batch over the steps after the first K (warm-up: allocator,
// loader start, first Gloo connections): img/s = B * (steps - K) / (time[last] - time[K]), times
// from rank 0's metrics.jsonl. comm % = rank 0's seconds blocked in collectives over the same
// span; it includes waiting for the slower rank, so it is the cost of synchronisation as a whole
// (transfer + imbalance), not the wire time alone.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "florence/data/webdataset.h"
#include "florence/text/bpe_trainer.h"
#include "support/paths.h"

namespace fs = std::filesystem;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string p; std::getline(ss, p, sep);) {
    if (!p.empty()) out.push_back(p);
  }
  return out;
}

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream f(p);
  for (std::string line; std::getline(f, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

struct Result {
  double img_s = 0, step_s = 0, comm_frac = 0, wait_frac = 0, first_loss = 0, last_loss = 0;
  bool ok = false;
};

Result measure(const fs::path& run, int64_t batch, int warmup) {
  Result r;
  const auto m = read_jsonl(run / "metrics.jsonl");
  if (int(m.size()) <= warmup + 1) return r;
  const double t0 = m[size_t(warmup)]["time"].get<double>(), t1 = m.back()["time"].get<double>();
  const double steps = double(m.size() - size_t(warmup) - 1);
  double comm = 0, wait = 0;
  for (size_t i = size_t(warmup) + 1; i < m.size(); ++i) {
    comm += m[i].value("comm_s", 0.0);
    wait += m[i]["data_wait_fraction"].get<double>();
  }
  r.step_s = (t1 - t0) / steps;
  r.img_s = double(batch) * steps / (t1 - t0);
  r.comm_frac = comm / (t1 - t0);
  r.wait_frac = wait / steps;
  r.first_loss = m.front()["loss"].get<double>();
  r.last_loss = m.back()["loss"].get<double>();
  r.ok = true;
  return r;
}

int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cli, shards = std::string(FLORENCE_SOURCE_DIR) + "/data/emoji/train";
  std::string models = "florence-nano,florence-t", steps_s = "30,8", batch_s = "64,16";
  std::string out = (fs::temp_directory_path() / "florence_bench_dist").string();
  int warmup = 3;
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--cli") cli = v;
    else if (k == "--shards") shards = v;
    else if (k == "--models") models = v;
    else if (k == "--steps") steps_s = v;
    else if (k == "--batch") batch_s = v;
    else if (k == "--warmup") warmup = std::stoi(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--out") out = v;
    else {
      std::cerr << "unknown option " << k << "\n";
      return 2;
    }
  }
  if (cli.empty()) cli = (fs::read_symlink("/proc/self/exe").parent_path() / "florence").string();
  if (!fs::exists(cli)) {
    std::cerr << "no florence CLI at " << cli << " (build target florence_cli or pass --cli)\n";
    return 2;
  }
  if (!fs::exists(shards)) {
    std::cerr << "no shards at " << shards << " (run `florence data build emoji --out data/emoji` or pass --shards)\n";
    return 2;
  }
  const auto model_list = split(models, ','), steps_list = split(steps_s, ','), batch_list = split(batch_s, ',');
  if (steps_list.size() != model_list.size() || batch_list.size() != model_list.size()) {
    std::cerr << "--steps and --batch need one value per model\n";
    return 2;
  }
  fs::create_directories(out);

  // A BPE vocabulary from the shards' texts (the towers' cost does not depend on its content).
  const fs::path vocab = fs::path(out) / "bpe.txt";
  if (!fs::exists(vocab)) {
    const fs::path texts = fs::path(out) / "texts.txt";
    std::ofstream f(texts);
    for (const auto& shard : florence::data::list_shards(shards)) {
      florence::data::ShardReader r(shard);
      florence::data::Sample s;
      while (r.next(s)) f << s.text << "\n";
    }
    f.close();
    florence::text::BpeTrainerOptions bo;
    bo.vocab_size = 2000;
    florence::text::train_bpe({texts.string()}, bo, vocab.string());
  }

  struct Row {
    std::string model, setup;
    int64_t batch;
    Result r;
  };
  std::vector<Row> rows;
  for (size_t i = 0; i < model_list.size(); ++i) {
    const std::string& model = model_list[i];
    const int64_t steps = std::stoll(steps_list[i]), batch = std::stoll(batch_list[i]);
    const std::string common =
        fmt::format("pretrain --model {} --vocab {} --shards {} --batch-size {} --steps {} --warmup-steps 1 "
                    "--lr 1e-4 --seed 1 --ckpt-every 0 --no-progress --log-every 1000 --augment none",
                    model, vocab.string(), shards, batch, steps);
    struct Setup {
      std::string name, prefix;
      int procs, threads_each;
    };
    const int half = std::max(1, threads / 2);
    for (const Setup& s : {Setup{fmt::format("1 proc x {} thr", threads), "", 1, threads},
                           Setup{fmt::format("2 proc x {} thr", half), "launch --nproc 2 -- ", 2, half}}) {
      const fs::path run = fs::path(out) / fmt::format("{}_{}p", model, s.procs);
      fs::remove_all(run);
      const fs::path log = fs::path(out) / fmt::format("{}_{}p.log", model, s.procs);
      const std::string cmd = fmt::format("OMP_NUM_THREADS={} {} {}--threads {} {} --workers {} --out {} > {} 2>&1",
                                          s.threads_each, cli, s.prefix, s.threads_each, common, s.threads_each,
                                          run.string(), log.string());
      std::cerr << "running " << model << ", " << s.name << " (" << steps << " steps, batch " << batch << ")...\n";
      const auto t0 = std::chrono::steady_clock::now();
      const int rc = sh(cmd);
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      Row row{model, s.name, batch, measure(run, batch, warmup)};
      if (rc != 0 || !row.r.ok) {
        std::cerr << "  failed (status " << rc << "), see " << log << "\n";
      } else {
        std::cerr << fmt::format("  {:.1f} s wall, {:.2f} img/s\n", wall, row.r.img_s);
      }
      rows.push_back(row);
    }
  }

  std::cout << fmt::format("\n{:<14} {:<16} {:>6} {:>9} {:>9} {:>9} {:>8} {:>10} {:>17}\n", "model", "setup", "batch",
                           "step s", "img/s", "vs 1 proc", "comm %", "data wait", "loss first->last");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (!r.r.ok) {
      std::cout << fmt::format("{:<14} {:<16} {:>6} failed\n", r.model, r.setup, r.batch);
      continue;
    }
    const Row& base = rows[i - (i % 2)];
    const double ratio = base.r.ok ? r.r.img_s / base.r.img_s : 0.0;
    std::cout << fmt::format("{:<14} {:<16} {:>6} {:>9.3f} {:>9.2f} {:>8.2f}x {:>7.1f}% {:>9.1f}% {:>8.3f}->{:.3f}\n",
                             r.model, r.setup, r.batch, r.r.step_s, r.r.img_s, ratio, 100.0 * r.r.comm_frac,
                             100.0 * r.r.wait_frac, r.r.first_loss, r.r.last_loss);
  }
  std::cout << fmt::format("(img/s over steps {}..end of each run; comm % = rank 0's time blocked in collectives, "
                           "waiting for the other rank included)\n",
                           warmup + 1);
  return 0;
}
