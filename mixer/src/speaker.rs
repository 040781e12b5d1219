//! Voice activity (per participant), top-N selection and dominant-speaker detection, all
//! with hysteresis so that short noises neither enter the mix for long nor switch the
//! active speaker.

use crate::ParticipantId;

/// Level (dBov) above which a frame counts as speech.
pub const SPEECH_THRESHOLD_DBOV: f32 = -45.0;
/// Consecutive loud ticks needed before a participant counts as speaking (40 ms).
const ATTACK_TICKS: u32 = 2;
/// Quiet ticks after which a speaking participant stops counting as speaking (500 ms).
const HANGOVER_TICKS: u32 = 25;
/// A new dominant speaker must lead continuously for this many ticks (400 ms).
pub const DOMINANT_LEAD_TICKS: u32 = 20;
/// Silent ticks after which the room has no dominant speaker (200 ms after hangover).
const ROOM_SILENT_TICKS: u32 = 10;
/// Current mix members keep their seat unless a newcomer is this much louder.
const TOPN_STICKY_DB: f32 = 6.0;
/// Dominant challenger must be this much louder than a still-speaking incumbent.
const DOMINANT_MARGIN_DB: f32 = 3.0;

/// Per-participant voice activity with attack and hangover.
#[derive(Debug, Clone)]
pub struct Vad {
    loud: u32,
    quiet: u32,
    speaking: bool,
    smoothed: f32,
}

impl Default for Vad {
    fn default() -> Self {
        Self {
            loud: 0,
            quiet: 0,
            speaking: false,
            smoothed: -127.0,
        }
    }
}

impl Vad {
    /// Feed this tick's level.
    pub fn update(&mut self, level_dbov: f32) {
        self.smoothed += 0.25 * (level_dbov - self.smoothed);
        if level_dbov > SPEECH_THRESHOLD_DBOV {
            self.loud += 1;
            self.quiet = 0;
            if self.loud >= ATTACK_TICKS {
                self.speaking = true;
            }
        } else {
            self.loud = 0;
            self.quiet += 1;
            if self.quiet >= HANGOVER_TICKS {
                self.speaking = false;
            }
        }
    }

    /// A detector resumed on a standby from a replicated `(speaking, smoothed)` pair.
    pub fn resumed(speaking: bool, smoothed: f32) -> Self {
        Self {
            speaking,
            smoothed,
            ..Self::default()
        }
    }

    /// Speaking after hysteresis.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Smoothed level (dBov).
    pub fn smoothed(&self) -> f32 {
        self.smoothed
    }
}

/// Choose the top-N mix set among `(id, smoothed level, speaking, currently mixed)`.
/// Deterministic: ties broken by id.
pub fn select_top_n(cands: &[(ParticipantId, f32, bool, bool)], n: usize) -> Vec<ParticipantId> {
    let mut v: Vec<(ParticipantId, f32)> = cands
        .iter()
        .filter(|c| c.2)
        .map(|&(id, lvl, _, mixed)| (id, if mixed { lvl + TOPN_STICKY_DB } else { lvl }))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut ids: Vec<ParticipantId> = v.into_iter().take(n).map(|(id, _)| id).collect();
    ids.sort_unstable();
    ids
}

/// Dominant (active) speaker with a lead requirement.
#[derive(Debug, Clone, Default)]
pub struct Dominant {
    current: Option<ParticipantId>,
    challenger: Option<ParticipantId>,
    lead: u32,
    silent: u32,
}

impl Dominant {
    /// A detector resumed on a standby with the replicated dominant speaker.
    pub fn resumed(current: Option<ParticipantId>) -> Self {
        Self {
            current,
            ..Self::default()
        }
    }

    /// Current dominant speaker.
    pub fn current(&self) -> Option<ParticipantId> {
        self.current
    }

    /// Forget a removed participant; returns true if it was dominant.
    pub fn remove(&mut self, id: ParticipantId) -> bool {
        if self.challenger == Some(id) {
            self.challenger = None;
            self.lead = 0;
        }
        if self.current == Some(id) {
            self.current = None;
            return true;
        }
        false
    }

    /// Feed `(id, smoothed level, speaking)` for every participant; returns the new
    /// dominant speaker when it changed.
    pub fn update(
        &mut self,
        cands: &[(ParticipantId, f32, bool)],
    ) -> Option<Option<ParticipantId>> {
        let best = cands
            .iter()
            .filter(|c| c.2)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|c| (c.0, c.1));
        let Some((best, best_level)) = best else {
            self.challenger = None;
            self.lead = 0;
            if self.current.is_some() {
                self.silent += 1;
                if self.silent >= ROOM_SILENT_TICKS {
                    self.current = None;
                    self.silent = 0;
                    return Some(None);
                }
            }
            return None;
        };
        self.silent = 0;
        if Some(best) == self.current {
            self.challenger = None;
            self.lead = 0;
            return None;
        }
        let incumbent = self
            .current
            .and_then(|c| cands.iter().find(|x| x.0 == c && x.2));
        if let Some(inc) = incumbent {
            if best_level < inc.1 + DOMINANT_MARGIN_DB {
                self.challenger = None;
                self.lead = 0;
                return None;
            }
        }
        if self.challenger == Some(best) {
            self.lead += 1;
        } else {
            self.challenger = Some(best);
            self.lead = 1;
        }
        if self.lead >= DOMINANT_LEAD_TICKS {
            self.current = Some(best);
            self.challenger = None;
            self.lead = 0;
            return Some(Some(best));
        }
        None
    }
}
