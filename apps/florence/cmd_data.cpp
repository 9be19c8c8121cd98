// florence data build SOURCE --out DIR [--size N] [--limit N] [--threads N] [--shard-size N]
//                    [--fields title,description,keywords] [--short-names] [--input PATH] [--overwrite] [--json]
// florence data build detection|vqa|actions --out DIR [--input CORPORA] [--images N | --clips N]
//                    [--size N] [--seed S] [--frames T] [--categories FILE] [--unseen a,b] [--backgrounds DIR]
#include <iostream>

#include "command.h"
#include "florence/adapt/detect/detection_set.h"
#include "florence/adapt/video/action_set.h"
#include "florence/adapt/vlp/vqa_set.h"
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
  auto fields = std::make_shared<std::string>("title");
  auto as_json = std::make_shared<bool>(false);
  auto scene = std::make_shared<SceneFlags>();
  auto size = std::make_shared<int>(0);
  cmd->add_option("source", o->source,
                  "openclipart | emoji | fashion-mnist (corpora); detection | vqa | actions (scene sets from the "
                  "corpora: docs/detection.md, docs/vqa.md, docs/video.md)")
      ->required()
      ->check(CLI::IsMember({"openclipart", "emoji", "fashion-mnist", "detection", "vqa", "actions"}));
  cmd->add_option("--out", o->out_dir, "Output directory")->required();
  cmd->add_option("--input", o->input,
                  "Source location (default: /usr/share/openclipart/svg, "
                  "$FLORENCE_CACHE/emoji-datasource-google-VERSION/package, /usr/share/datasets/fashion-mnist); "
                  "scene sets: corpus folders, comma-separated (default: data/openclipart,data/emoji)");
  cmd->add_option("--size", *size,
                  "Pixels (square): openclipart render size (default 96); detection / vqa image size (160 / 128); "
                  "actions frame size (64)")
      ->check(florence::cli::positive());
  cmd->add_option("--images", scene->images, "detection / vqa: scenes in all (70% train, 10% val, 20% test; default 5000 / 3000)")
      ->check(florence::cli::positive());
  cmd->add_option("--clips", scene->clips, "actions: clips in all (70/10/20; default 2200)")->check(florence::cli::positive());
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
  cmd->add_option("--fields", *fields, "openclipart: text fields, comma-separated: title,description,keywords")
      ->capture_default_str();
  cmd->add_option("--render-timeout", o->render_timeout_s, "openclipart: seconds before a rsvg-convert run is killed")
      ->capture_default_str()
      ->check(florence::cli::positive());
  cmd->add_flag("--short-names", o->short_names, "emoji: append the short names to the text");
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
