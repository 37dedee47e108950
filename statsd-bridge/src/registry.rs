//! Every series the bridge exposes, and the path each statsd sample takes to
//! one.
//!
//! The hot path is one hash lookup: the raw statsd identity of a sample (its
//! type, name, tags and container id, copied into a reused buffer) keys a
//! cache of what mapping decided for it, down to the series slot. Only a
//! miss runs the mapping, builds labels and touches the family maps. Series
//! live in a slab; a slot's generation changes when its series expires, so a
//! cache entry can never reach a series it was not made for.
//!
//! The registry is owned by one lock, taken once per packet (or per TCP read)
//! by the listeners and briefly by a scrape, which copies numbers out and
//! formats them after letting go. Time is passed in, so tests move it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::line::{self, Item, ParseError, Sample, StatType};
use crate::mapping::{Mapper, Observer, Resolution, Settings};
use crate::names::{escape_metric_name, push_label_value};
use crate::set::Set;
use crate::stats::{EventError, Stats, event_type};
use crate::summary::Summary;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Live series at most; samples that would make more are dropped.
    pub max_series: usize,
    /// Raw statsd identities remembered; at this size the cache starts over.
    pub cache_size: usize,
    /// A set's counting window.
    pub set_window: Duration,
    /// Whether `|#k:v` tags become labels.
    pub dogstatsd_tags: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_series: 100_000,
            cache_size: 200_000,
            set_window: Duration::from_secs(10),
            dogstatsd_tags: true,
        }
    }
}

/// A family's type; sets are exposed as gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Set,
    Histogram,
    Summary,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Counter,
        Kind::Gauge,
        Kind::Set,
        Kind::Histogram,
        Kind::Summary,
    ];

    /// The `# TYPE` word.
    pub fn exposed(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::Set => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }

    /// The sample names a family of this kind writes besides its own name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Histogram => &["_bucket", "_sum", "_count"],
            Kind::Summary => &["_sum", "_count"],
            _ => &[],
        }
    }
}

#[derive(Debug)]
enum Value {
    Counter(f64),
    Gauge(f64),
    Set(Box<Set>),
    Histogram(Box<Histogram>),
    Summary(Box<Summary>),
}

#[derive(Debug)]
struct Series {
    family: u32,
    /// `a="x",b="y"`, sorted by name.
    labels: Arc<str>,
    value: Value,
    ttl: Duration,
    updated: Instant,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    series: Option<Series>,
}

#[derive(Debug)]
struct Family {
    name: Arc<str>,
    help: Arc<str>,
    kind: Kind,
    series: Map<Arc<str>, u32>,
}

/// What the cache remembers about one raw statsd identity.
#[derive(Clone, Copy, Debug)]
struct Cached {
    target: Target,
    tagged: bool,
    tag_errors: u16,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Series {
        slot: u32,
        generation: u32,
        /// ms → s, times the mapping's `scale`.
        scale: f64,
        ttl: Duration,
        mapped: bool,
    },
    Drop,
}

pub struct Registry {
    mapper: Arc<Mapper>,
    limits: Limits,
    cache: Map<Box<[u8]>, Cached>,
    /// The cache key being built; kept to reuse its allocation.
    key: Vec<u8>,
    families: Map<Arc<str>, u32>,
    family_slots: Vec<Option<Family>>,
    free_families: Vec<u32>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    by_kind: [usize; Kind::ALL.len()],
    pub stats: Stats,
}

/// The numbers of one scrape, copied out under the lock.
pub struct Snapshot {
    pub families: Vec<FamilySnapshot>,
    /// Per series: a counter, gauge or set is `[v]`; a histogram is
    /// `[le, cumulative count]…` ending with `+Inf`, then sum and count; a
    /// summary is `[quantile, value]…`, then sum and count.
    pub numbers: Vec<f64>,
    pub stats: Stats,
    pub series_by_kind: [usize; Kind::ALL.len()],
    pub max_series: usize,
    pub cache_len: usize,
    pub mappings: usize,
}

pub struct FamilySnapshot {
    pub name: Arc<str>,
    pub help: Arc<str>,
    pub kind: Kind,
    pub series: Vec<(Arc<str>, Range<usize>)>,
}

impl Registry {
    pub fn new(mapper: Arc<Mapper>, limits: Limits) -> Registry {
        Registry {
            mapper,
            limits,
            cache: Map::default(),
            key: Vec::with_capacity(256),
            families: Map::default(),
            family_slots: Vec::new(),
            free_families: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_kind: [0; Kind::ALL.len()],
            stats: Stats::default(),
        }
    }

    /// New mapping rules for what arrives from now on; series already made
    /// keep their names until they expire.
    pub fn set_mapper(&mut self, mapper: Arc<Mapper>) {
        self.mapper = mapper;
        self.cache.clear();
    }

    pub fn mapper(&self) -> &Arc<Mapper> {
        &self.mapper
    }

    pub fn series_count(&self) -> usize {
        self.by_kind.iter().sum()
    }

    /// Newline-separated lines, as a UDP datagram or a run of TCP lines
    /// brings them.
    pub fn ingest(&mut self, packet: &[u8], now: Instant) {
        match std::str::from_utf8(packet) {
            Ok(text) => {
                for line in text.split('\n') {
                    self.line(line, now);
                }
            }
            // Only the lines that are not UTF-8 are lost.
            Err(_) => {
                for line in packet.split(|b| *b == b'\n') {
                    match std::str::from_utf8(line) {
                        Ok(line) => self.line(line, now),
                        Err(_) => {
                            self.stats.lines += 1;
                            self.stats.parse_error(ParseError::InvalidUtf8);
                        }
                    }
                }
            }
        }
    }

    fn line(&mut self, line: &str, now: Instant) {
        if line.is_empty() || line == "\r" {
            return;
        }
        self.stats.lines += 1;
        line::parse_line(line, &mut |item| match item {
            Item::Sample(s) => self.sample(&s, now),
            Item::Error(e) => self.stats.parse_error(e),
        });
    }

    fn sample(&mut self, s: &Sample<'_>, now: Instant) {
        self.stats.samples += 1;
        let tags = if self.limits.dogstatsd_tags {
            s.tags
        } else {
            ""
        };
        // Lengths, not separators, between the parts: any byte may be in a
        // name, so no separator could keep two identities apart.
        self.key.clear();
        self.key.push(s.stat.code());
        for part in [s.name, tags] {
            self.key
                .extend_from_slice(&(part.len() as u32).to_le_bytes());
            self.key.extend_from_slice(part.as_bytes());
        }
        self.key.extend_from_slice(s.container.as_bytes());
        self.stats.cache_gets += 1;
        let cached = match self.cache.get(self.key.as_slice()) {
            Some(c) if live(&self.slots, c) => {
                self.stats.cache_hits += 1;
                *c
            }
            _ => match self.resolve(s, tags, now) {
                Some(c) => c,
                None => return,
            },
        };
        if cached.tagged {
            self.stats.tags += 1;
        }
        self.stats.tag_errors += u64::from(cached.tag_errors);
        match cached.target {
            Target::Drop => self.stats.actions[1] += 1,
            Target::Series {
                slot,
                scale,
                ttl,
                mapped,
                ..
            } => {
                if self.update(slot, s, scale, ttl, now) {
                    if mapped {
                        self.stats.actions[0] += 1;
                    } else {
                        self.stats.events_unmapped += 1;
                    }
                }
            }
        }
    }

    /// Applies a sample; false when it was refused (a negative counter).
    fn update(
        &mut self,
        slot: u32,
        s: &Sample<'_>,
        scale: f64,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let Some(series) = self.slots[slot as usize].series.as_mut() else {
            return false;
        };
        match &mut series.value {
            Value::Counter(c) => {
                let v = s.value / s.rate * scale;
                if v < 0.0 {
                    self.stats.event_error(EventError::IllegalNegativeCounter);
                    return false;
                }
                *c += v;
            }
            Value::Gauge(g) => {
                // A gauge's rate is ignored, as statsd_exporter does.
                let v = s.value * scale;
                if s.relative {
                    *g += v;
                } else {
                    *g = v;
                }
            }
            Value::Set(set) => set.insert(s.member, now, self.limits.set_window),
            Value::Histogram(h) => h.observe(s.value * scale, repeats(s.rate)),
            Value::Summary(summary) => summary.observe(s.value * scale, repeats(s.rate), now),
        }
        series.updated = now;
        series.ttl = ttl;
        self.stats.events[event_type(s.stat)] += 1;
        true
    }

    /// The slow path: mapping, labels, family, series. `None` when the sample
    /// goes nowhere (a conflict, the series limit, an empty name); those are
    /// not cached, so they are decided again once things change.
    fn resolve(&mut self, s: &Sample<'_>, tags: &str, now: Instant) -> Option<Cached> {
        let mapper = self.mapper.clone();
        let (name, mapping_labels, settings, mapped) =
            match mapper.resolve(s.name, s.stat.metric_type()) {
                Resolution::Drop => {
                    let (labels, tag_errors) = tag_labels(tags, s.container, false);
                    let cached = Cached {
                        target: Target::Drop,
                        tagged: !labels.is_empty(),
                        tag_errors,
                    };
                    self.remember(cached);
                    return Some(cached);
                }
                Resolution::EmptyName => {
                    self.stats.event_error(EventError::EmptyMetricName);
                    return None;
                }
                Resolution::Map {
                    name,
                    labels,
                    settings,
                    mapped,
                } => (name, labels, settings, mapped),
            };
        let kind = match s.stat {
            StatType::Counter => Kind::Counter,
            StatType::Gauge => Kind::Gauge,
            StatType::Set => Kind::Set,
            StatType::Timer | StatType::Histogram | StatType::Distribution => {
                match settings.observer {
                    Observer::Histogram { .. } => Kind::Histogram,
                    Observer::Summary(_) => Kind::Summary,
                }
            }
        };
        let scale = s.stat.unit_scale() * settings.scale;
        if kind == Kind::Counter && s.value / s.rate * scale < 0.0 {
            // Refused before a series is made for it.
            self.stats.event_error(EventError::IllegalNegativeCounter);
            return None;
        }
        let observer = matches!(kind, Kind::Histogram | Kind::Summary);
        let (mut labels, tag_errors) = tag_labels(tags, s.container, observer);
        let tagged = !labels.is_empty();
        for (k, v) in mapping_labels {
            if settings.honor_labels && labels.iter().any(|(t, _)| *t == k) {
                continue;
            }
            labels.push((Cow::Owned(k), Cow::Owned(v)));
        }
        let label_text = render_labels(labels);
        let Some(slot) = self.series_for(&name, kind, label_text, settings, s.stat, now) else {
            // Not cached, so counted here rather than on every hit.
            self.stats.tag_errors += u64::from(tag_errors);
            self.stats.tags += u64::from(tagged);
            return None;
        };
        let cached = Cached {
            target: Target::Series {
                slot,
                generation: self.slots[slot as usize].generation,
                scale,
                ttl: settings.ttl,
                mapped,
            },
            tagged,
            tag_errors,
        };
        self.remember(cached);
        Some(cached)
    }

    /// The slot of the series `name{labels}`, made if need be; `None` when
    /// the name is another type's or the series cap is reached.
    fn series_for(
        &mut self,
        name: &str,
        kind: Kind,
        labels: String,
        settings: &Settings,
        stat: StatType,
        now: Instant,
    ) -> Option<u32> {
        let family = match self.families.get(name) {
            Some(&f) => {
                let existing = self.family_slots[f as usize].as_ref()?;
                if existing.kind != kind {
                    self.stats.conflicts[event_type(stat)] += 1;
                    return None;
                }
                if let Some(&slot) = existing.series.get(labels.as_str()) {
                    return Some(slot);
                }
                Some(f)
            }
            None => {
                if self.collides(name, kind) {
                    self.stats.conflicts[event_type(stat)] += 1;
                    return None;
                }
                None
            }
        };
        if self.series_count() >= self.limits.max_series {
            self.stats.series_limit_drops += 1;
            return None;
        }
        let family = match family {
            Some(f) => f,
            None => self.new_family(name, settings.help.clone(), kind),
        };
        let value = match (&settings.observer, kind) {
            (_, Kind::Counter) => Value::Counter(0.0),
            (_, Kind::Gauge) => Value::Gauge(0.0),
            (_, Kind::Set) => Value::Set(Box::new(Set::new(now))),
            (Observer::Histogram { buckets }, _) => {
                Value::Histogram(Box::new(Histogram::new(buckets.clone())))
            }
            (Observer::Summary(options), _) => {
                Value::Summary(Box::new(Summary::new(options.clone(), now)))
            }
        };
        Some(self.new_series(family, kind, labels.into(), value, settings.ttl, now))
    }

    fn remember(&mut self, cached: Cached) {
        if self.limits.cache_size == 0 {
            return;
        }
        if self.cache.len() >= self.limits.cache_size {
            self.cache.clear();
            self.stats.cache_resets += 1;
        }
        self.cache.insert(self.key.as_slice().into(), cached);
    }

    /// Whether a new family would write a sample name another family writes
    /// (`x_count` beside a histogram `x`, say) or one of the bridge's own.
    fn collides(&self, name: &str, kind: Kind) -> bool {
        let writes = |family: &str, k: Kind| -> Vec<String> {
            std::iter::once(family.to_string())
                .chain(k.suffixes().iter().map(|s| format!("{family}{s}")))
                .collect()
        };
        let mine = writes(name, kind);
        if mine.iter().any(|n| crate::exposition::is_own(n)) {
            return true;
        }
        // Someone else's plain name among mine.
        if mine[1..]
            .iter()
            .any(|n| self.families.contains_key(n.as_str()))
        {
            return true;
        }
        // My plain name among someone else's suffixed ones.
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            let Some(base) = name.strip_suffix(suffix) else {
                return false;
            };
            self.families
                .get(base)
                .and_then(|&f| self.family_slots[f as usize].as_ref())
                .is_some_and(|f| f.kind.suffixes().contains(suffix))
        })
    }

    fn new_family(&mut self, name: &str, help: Arc<str>, kind: Kind) -> u32 {
        let name: Arc<str> = Arc::from(name);
        let family = Family {
            name: name.clone(),
            help,
            kind,
            series: Map::default(),
        };
        let id = match self.free_families.pop() {
            Some(id) => {
                self.family_slots[id as usize] = Some(family);
                id
            }
            None => {
                self.family_slots.push(Some(family));
                (self.family_slots.len() - 1) as u32
            }
        };
        self.families.insert(name, id);
        id
    }

    fn new_series(
        &mut self,
        family: u32,
        kind: Kind,
        labels: Arc<str>,
        value: Value,
        ttl: Duration,
        now: Instant,
    ) -> u32 {
        let series = Series {
            family,
            labels: labels.clone(),
            value,
            ttl,
            updated: now,
        };
        let slot = match self.free_slots.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[slot as usize].series = Some(series);
        if let Some(f) = self.family_slots[family as usize].as_mut() {
            f.series.insert(labels, slot);
        }
        self.by_kind[kind as usize] += 1;
        slot
    }

    /// Removes the series whose TTL has passed since their last sample;
    /// returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        for i in 0..self.slots.len() {
            let expired = self.slots[i].series.as_ref().is_some_and(|s| {
                !s.ttl.is_zero() && now.saturating_duration_since(s.updated) >= s.ttl
            });
            if expired {
                self.remove(i);
                removed += 1;
            }
        }
        if removed > 0 {
            self.stats.series_expired += removed as u64;
            let slots = &self.slots;
            self.cache.retain(|_, c| live(slots, c));
        }
        removed
    }

    fn remove(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(series) = slot.series.take() else {
            return;
        };
        // Cache entries made for this series must not reach the next one.
        slot.generation = slot.generation.wrapping_add(1);
        self.free_slots.push(i as u32);
        let f = series.family as usize;
        let Some(family) = self.family_slots[f].as_mut() else {
            return;
        };
        family.series.remove(&series.labels);
        self.by_kind[family.kind as usize] -= 1;
        if family.series.is_empty() {
            self.families.remove(&family.name);
            self.family_slots[f] = None;
            self.free_families.push(f as u32);
        }
    }

    /// Copies out what a scrape shows. Summaries and sets move their windows
    /// to `now` first.
    pub fn snapshot(&mut self, now: Instant) -> Snapshot {
        let mut families: Vec<FamilySnapshot> = Vec::with_capacity(self.families.len());
        let mut numbers = Vec::with_capacity(self.series_count() * 2);
        let mut position: Vec<u32> = vec![u32::MAX; self.family_slots.len()];
        for slot in self.slots.iter_mut() {
            let Some(series) = slot.series.as_mut() else {
                continue;
            };
            let Some(family) = self.family_slots[series.family as usize].as_ref() else {
                continue;
            };
            let at = &mut position[series.family as usize];
            if *at == u32::MAX {
                *at = families.len() as u32;
                families.push(FamilySnapshot {
                    name: family.name.clone(),
                    help: family.help.clone(),
                    kind: family.kind,
                    series: Vec::with_capacity(family.series.len()),
                });
            }
            let start = numbers.len();
            match &mut series.value {
                Value::Counter(v) | Value::Gauge(v) => numbers.push(*v),
                Value::Set(set) => numbers.push(set.value(now, self.limits.set_window)),
                Value::Histogram(h) => {
                    for (le, count) in h.cumulative() {
                        numbers.extend([le, count as f64]);
                    }
                    numbers.extend([h.sum(), h.count() as f64]);
                }
                Value::Summary(s) => {
                    for (q, v) in s.quantiles(now) {
                        numbers.extend([q, v]);
                    }
                    numbers.extend([s.sum(), s.count() as f64]);
                }
            }
            families[*at as usize]
                .series
                .push((series.labels.clone(), start..numbers.len()));
        }
        Snapshot {
            families,
            numbers,
            stats: self.stats.clone(),
            series_by_kind: self.by_kind,
            max_series: self.limits.max_series,
            cache_len: self.cache.len(),
            mappings: self.mapper.len(),
        }
    }
}

fn live(slots: &[Slot], cached: &Cached) -> bool {
    match cached.target {
        Target::Drop => true,
        Target::Series {
            slot, generation, ..
        } => slots
            .get(slot as usize)
            .is_some_and(|s| s.generation == generation && s.series.is_some()),
    }
}

/// Observations a sampled timer stands for: statsd_exporter observes a
/// timer sent at `@0.1` ten times (the whole part of 1/rate).
fn repeats(rate: f64) -> u64 {
    (1.0 / rate).floor().clamp(1.0, 1e12) as u64
}

type Labels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Labels from DogStatsD tags and the container id, and the tag errors.
/// Tag names are escaped like metric names; names Prometheus reserves, and
/// `le`/`quantile` on a histogram or summary, are errors.
fn tag_labels<'a>(tags: &'a str, container: &'a str, observer: bool) -> (Labels<'a>, u16) {
    let mut labels = Vec::new();
    let mut errors: u16 = 0;
    for tag in line::tags(tags) {
        match tag {
            Ok((k, v)) => {
                let k = escape_metric_name(k);
                if k.starts_with("__") || (observer && (k == "le" || k == "quantile")) {
                    errors = errors.saturating_add(1);
                } else {
                    labels.push((k, Cow::Borrowed(v)));
                }
            }
            Err(()) => errors = errors.saturating_add(1),
        }
    }
    if !container.is_empty() {
        labels.push((Cow::Borrowed("container_id"), Cow::Borrowed(container)));
    }
    (labels, errors)
}

/// `a="x",b="y"`: sorted by name; of the same name, the last given wins
/// (so a mapping's labels win over tags, and a later tag over an earlier).
fn render_labels(mut labels: Labels<'_>) -> String {
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if labels.get(i + 1).is_some_and(|next| next.0 == *k) {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        push_label_value(&mut out, v);
        out.push('"');
    }
    out
}

#[cfg(test)]
mod tests;
