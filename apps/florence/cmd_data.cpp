// florence data build SOURCE --out DIR [--size N] [--limit N] [--threads N] [--shard-size N]
//                    [--fields a,b] [--short-names] [--input PATH] [--overwrite] [--json]
// florence data build all --out DATA [--sources a,b] [--parallel N] [--size N] [--limit N] [--overwrite]
// florence data build detection|vqa|actions --out DIR [--input CORPORA] [--images N | --clips N]
//                    [--size N] [--seed S] [--frames T] [--categories FILE] [--unseen a,b] [--backgrounds DIR]
#include <fmt/format.h>

#include <iostream>

#include "command.h"
#include "florence/adapt/detect/detection_set.h"
#include "florence/adapt/video/action_set.h"
#include "florence/adapt/vlp/vqa_set.h"
#include "florence/core/error.h"
#include "florence/data/corpus.h"
#include "florence/data/scene.h"

namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text + ",") {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (c != ' ') {
      cur.push_back(c);
    }
  }
  return out;
}

/// Options of the scene sets (detection, vqa, actions) as the command line gives them.
struct SceneFlags {
  std::string input = "data/openclipart,data/emoji", categories, unseen, backgrounds, emoji_dir;
  int64_t images = 0, clips = 0;
  uint64_t seed = 0;
  int frames = 16;
  double fps = 8;
};

/// Splits `total` 70/10/20 into train/val/test (the sprite split's proportions).
void split_counts(int64_t total, int64_t& train, int64_t& val, int64_t& test) {
  val = total / 10;
  test = total / 5;
  train = total - val - test;
}

nlohmann::json build_scene_set(const std::string& source, const std::string& out, int size, int threads, bool overwrite,
                               const SceneFlags& f) {
  florence::data::SpriteBankOptions sprites;
  sprites.corpora = split_list(f.input);
  sprites.categories_file = f.categories;
  sprites.emoji_dir = f.emoji_dir;
  florence::data::BackgroundOptions bg;
  if (!f.backgrounds.empty()) bg.photos_dir = f.backgrounds;
  if (source == "detection") {
    florence::detect::DetectionSetOptions o;
    o.out_dir = out, o.sprites = sprites, o.backgrounds = bg, o.seed = f.seed, o.threads = threads, o.overwrite = overwrite;
    if (size > 0) o.image_size = size;
    if (f.images > 0) split_counts(f.images, o.train_images, o.val_images, o.test_images);
    o.unseen = split_list(f.unseen);
    return florence::detect::build_detection_set(o);
  }
  if (source == "vqa") {
    florence::vlp::VqaSetOptions o;
    o.out_dir = out, o.sprites = sprites, o.backgrounds = bg, o.seed = f.seed, o.threads = threads, o.overwrite = overwrite;
    if (size > 0) o.image_size = size;
    if (f.images > 0) split_counts(f.images, o.train_images, o.val_images, o.test_images);
    return florence::vlp::build_vqa_set(o);
  }
  florence::video::ActionSetOptions o;
  o.out_dir = out, o.sprites = sprites, o.backgrounds = bg, o.seed = f.seed, o.threads = threads, o.overwrite = overwrite;
  if (size > 0) o.frame_size = size;
  o.frames = f.frames;
  o.fps = f.fps;
  if (f.clips > 0) split_counts(f.clips, o.train_clips, o.val_clips, o.test_clips);
  return florence::video::build_action_set(o);
}

void setup_data(CLI::App& root) {
  auto* data = florence::cli::group(root, "data", "Data sets: build WebDataset corpora from local sources");
  auto* cmd = data->add_subcommand(
      "build", "Build WebDataset shards OUT/{train,val,test}/NNNNNN.tar + OUT/summary.json from a local source");
  auto o = std::make_shared<florence::data::CorpusOptions>();
  auto fields = std::make_shared<std::string>();
  auto all = std::make_shared<florence::data::BuildAllOptions>();
  auto all_sources = std::make_shared<std::string>();
  std::vector<std::string> names;
  std::string corpus_names;
  for (const auto& src : florence::data::corpus_sources()) {
    names.push_back(src.name);
    corpus_names += (corpus_names.empty() ? "" : " | ") + src.name;
  }
  for (const char* n : {"all", "detection", "vqa", "actions"}) names.push_back(n);
  auto as_json = std::make_shared<bool>(false);
  auto scene = std::make_shared<SceneFlags>();
  auto size = std::make_shared<int>(0);
  cmd->add_option("source", o->source,
                  corpus_names + " (corpora: docs/data.md); all (every corpus into OUT/NAME); detection | vqa | "
                  "actions (scene sets from the corpora: docs/detection.md, docs/vqa.md, docs/video.md)")
      ->required()
      ->check(CLI::IsMember(names));
  cmd->add_option("--out", o->out_dir, "Output directory")->required();
  cmd->add_option("--input", o->input,
                  "Source location (default: where scripts/setup puts it, docs/data.md); "
                  "scene sets: corpus folders, comma-separated (default: data/openclipart,data/emoji)");
  cmd->add_option("--size", *size,
                  "Pixels (square): render size of the SVG and stamp corpora (default 96); detection / vqa image "
                  "size (160 / 128); actions frame size (64)")
      ->check(florence::cli::positive());
  cmd->add_option("--images", scene->images, "detection / vqa: scenes in all (70% train, 10% val, 20% test; default 5000 / 3000)")
      ->check(florence::cli::positive());
  cmd->add_option("--clips", scene->clips, "actions: clips in all (70/10/20; default 8800)")->check(florence::cli::positive());
  cmd->add_option("--seed", scene->seed, "Scene sets: random seed (same seed, same set)")->capture_default_str();
  cmd->add_option("--frames", scene->frames, "actions: frames per clip")->capture_default_str()->check(CLI::Range(2, 256));
  cmd->add_option("--fps", scene->fps, "actions: frame rate of the video files")->capture_default_str()->check(florence::cli::positive());
  cmd->add_option("--categories", scene->categories, "Scene sets: category table JSON (default: the built-in table)");
  cmd->add_option("--unseen", scene->unseen, "detection: unseen (zero-shot) categories, comma-separated (default: the table's)");
  cmd->add_option("--backgrounds", scene->backgrounds,
                  "Scene sets: folder of background photos (default: /usr/share/doc/opencv-doc/examples/data)");
  cmd->add_option("--emoji-dir", scene->emoji_dir,
                  "Scene sets: emoji-datasource-google package for exact emoji alpha (default: the setup's)");
  cmd->add_option("--limit", o->limit,
                  "Only the first N source items (SVG files / emoji entries / images per original split); 0 = all")
      ->capture_default_str()
      ->check(florence::cli::non_negative());
  cmd->add_option("--threads", o->threads, "Worker threads (default: the global --threads, else all cores)")
      ->check(florence::cli::non_negative());
  cmd->add_option("--shard-size", o->shard_size, "Samples per shard")->capture_default_str()->check(florence::cli::positive());
  cmd->add_option("--fields", *fields,
                  "Text fields, comma-separated (default: the source's): openclipart title,description,keywords "
                  "(title); openmoji annotation,tags; mdi name,aliases,tags (name,aliases); tabler name,tags; "
                  "fontawesome label,terms; flags name,official (name); tuxpaint caption");
  cmd->add_option("--render-timeout", o->render_timeout_s, "SVG corpora: seconds before a rsvg-convert run is killed")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_flag("--short-names", o->short_names, "emoji, twemoji: append the short names to the text");
  auto* sources_opt =
      cmd->add_option("--sources", *all_sources, "all: only these corpora, comma-separated (default: every one)");
  cmd->add_option("--parallel", all->parallel, "all: corpora built at once (the threads are split between them)")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  cmd->add_flag("--overwrite", o->overwrite, "Replace an existing corpus in --out");
  cmd->add_flag("--json", *as_json, "Print the summary as JSON");
  cmd->callback([=] {
    if (o->source == "detection" || o->source == "vqa" || o->source == "actions") {
      if (!o->input.empty()) scene->input = o->input;
      const int threads = o->threads > 0 ? o->threads : florence::cli::requested_threads();
      const nlohmann::json summary = build_scene_set(o->source, o->out_dir, *size, threads, o->overwrite, *scene);
      std::cout << (*as_json ? summary.dump(2) + "\n" : florence::data::format_scene_set_summary(summary));
      return;
    }
    if (*size > 0) o->size = *size;
    o->fields = split_list(*fields);
    if (o->threads == 0) o->threads = florence::cli::requested_threads();
    if (o->source == "all") {
      if (!o->input.empty() || !o->fields.empty() || o->short_names)
        throw florence::Error("data build all: --input, --fields and --short-names name one source's options; "
                              "build that source on its own (all uses the demo's text options: docs/data.md)");
      all->out_dir = o->out_dir;
      all->base = *o;
      all->sources = split_list(*all_sources);
      if (sources_opt->count() > 0 && all->sources.empty())
        throw florence::Error("data build all: --sources names no corpus (leave it out to build every one)");
      const nlohmann::json result = florence::data::build_all_corpora(*all);
      std::cout << (*as_json ? result.dump(2) + "\n" : florence::data::format_build_all_summary(result));
      if (result.value("failed", int64_t(0)) > 0)
        throw florence::Error(fmt::format("data build all: {} source(s) failed (see the table)", result.value("failed", int64_t(0))));
      return;
    }
    if (!all_sources->empty()) throw florence::Error("data build: --sources is an option of 'data build all'");
    if (!o->fields.empty() && florence::data::corpus_source(o->source).fields.empty())
      throw florence::Error("data build " + o->source + ": the source has no text fields to choose (--fields " +
                            *fields + ")");
    const nlohmann::json summary = florence::data::build_corpus(*o);
    if (*as_json) {
      nlohmann::json brief = summary;
      brief.erase("failed_items");
      std::cout << brief.dump(2) << "\n";
    } else {
      std::cout << florence::data::format_corpus_summary(summary);
    }
  });
}

}  // namespace

FLORENCE_COMMAND(setup_data);
