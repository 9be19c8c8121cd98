#pragma once
// Seed derivation for the trainer's own random choices (mixture tables, prompt templates), so
// every choice is a pure function of (run seed, epoch, batch, row, ...) and a resumed run makes
// the same ones. Generators are std::mt19937_64 drawn through data::uniform01 / uniform_int
// (platform independent, see data/transforms.h).
#include <cstdint>
#include <initializer_list>

namespace florence::train {

/// splitmix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// One seed from several values (order matters).
inline uint64_t seed_mix(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x747261696e696e67ull;  // "training"
  for (uint64_t v : values) h = splitmix64(h ^ splitmix64(v));
  return h;
}

/// Stream tags: different purposes never share a generator.
inline constexpr uint64_t kTagMixture = 11, kTagPrompt = 12, kTagInit = 13;

/// Seeds LibTorch's global generator for a model's random initialisation from the run seed
/// (stream kTagInit), so a task's weights before training are a function of --seed alone.
/// Defined in run_state.cpp.
void seed_model_init(uint64_t run_seed);

}  // namespace florence::train
