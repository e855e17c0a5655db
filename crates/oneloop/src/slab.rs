//! Generational slot storage for ops in flight, with addresses that never move.
//!
//! Each backend keeps every accepted op in a [`Slab`] from `submit` until its final completion.
//! Two properties make that safe to hand to a kernel:
//!
//! * **Stable addresses.** The slab allocates its full capacity once and never grows past it,
//!   so an entry's fields (timespecs, iovecs, socket addresses the kernel reads) stay put while
//!   the entry lives. A full slab refuses inserts instead of reallocating.
//! * **Generations.** A [`Key`] is an index plus the generation the slot had when it was
//!   filled; removing bumps the generation, so a stale key (a late cancel, an old kernel event)
//!   finds nothing instead of a stranger's op.
//! * **Retired slots.** An op's slot is *retired* at its final completion: the value is gone
//!   (lookups find nothing, as after a removal) but the index stays reserved — no insert reuses
//!   it — until the ring *releases* it, when that completion is taken. So the ring can keep the
//!   completion (and a waker) under the op's own index, and an id stays unambiguous until then.
//! * **Generations never wrap.** A slot whose generation reached `u32::MAX` is retired for good
//!   when it empties (one slot lost after four billion uses of it), so a key — and what names a
//!   slot by its key, such as a stale timer entry — is never taken for a later occupant's.
#![forbid(unsafe_code)]

use std::marker::PhantomData;

/// The most slots a slab may have: indices must fit in 24 bits of a `user_data`.
pub(crate) const CAPACITY_MAX: usize = 1 << 24;

/// The table a key belongs to: the ring's op slots (the default).
pub(crate) enum Ops {}

/// A slot index and its generation, in the table `M` (a marker type: keys of different
/// tables do not mix, e.g. an op slot's key and an AIO request's).
pub(crate) struct Key<M = Ops> {
    pub index: u32,
    pub generation: u32,
    table: PhantomData<fn() -> M>,
}

impl<M> Key<M> {
    pub fn new(index: u32, generation: u32) -> Key<M> {
        Key {
            index,
            generation,
            table: PhantomData,
        }
    }

    /// Packs the key into 56 bits: generation above, 24-bit index below.
    pub fn pack(self) -> u64 {
        (u64::from(self.generation) << 24) | u64::from(self.index)
    }

    /// Unpacks what [`pack`](Self::pack) made (higher bits are ignored).
    pub fn unpack(bits: u64) -> Key<M> {
        Key::new((bits & 0xFF_FFFF) as u32, (bits >> 24) as u32)
    }
}

// By hand, not derived: a derive would ask the marker type for the same traits.
impl<M> Clone for Key<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Key<M> {}
impl<M> PartialEq for Key<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.index, self.generation) == (other.index, other.generation)
    }
}
impl<M> Eq for Key<M> {}
impl<M> std::hash::Hash for Key<M> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.index, self.generation).hash(state);
    }
}
impl<M> std::fmt::Debug for Key<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}g{})", self.index, self.generation)
    }
}

enum Place<T> {
    Occupied {
        generation: u32,
        value: T,
    },
    Vacant {
        generation: u32,
        next_free: Option<u32>,
    },
    /// The value is gone, the index reserved until released (see the module doc).
    Retired {
        generation: u32,
    },
    /// Its generation ran out: never used again (see the module doc).
    Worn,
}

/// Fixed-capacity generational storage.
pub(crate) struct Slab<T, M = Ops> {
    /// # Invariant
    /// `entries.capacity() >= capacity` from construction on and `entries.len() <= capacity`,
    /// so pushing never reallocates: an occupied entry's address is stable until removed.
    entries: Vec<Place<T>>,
    capacity: usize,
    free_head: Option<u32>,
    len: usize,
    /// Slots retired and not yet released.
    retired: usize,
    /// Slots whose generations ran out (never reused).
    worn: usize,
    keys: PhantomData<fn() -> M>,
}

impl<T, M> Slab<T, M> {
    /// A slab that will hold at most `capacity` values (clamped to [`CAPACITY_MAX`]).
    ///
    /// Reserves the whole capacity now; pages are touched only as slots are first used (huge
    /// pages where the kernel allows, for a large slab).
    pub fn with_capacity(capacity: usize) -> Slab<T, M> {
        let capacity = capacity.clamp(1, CAPACITY_MAX);
        let entries = Vec::with_capacity(capacity);
        crate::sys::posix::advise_huge_pages(&entries);
        Slab {
            entries,
            capacity,
            free_head: None,
            len: 0,
            retired: 0,
            worn: 0,
            keys: PhantomData,
        }
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether an insert would be refused: every slot holds a value, is retired, or is worn.
    pub fn is_full(&self) -> bool {
        self.len + self.retired + self.worn == self.capacity
    }

    /// The most values the slab holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stores `value`; gives it back if the slab is full.
    #[inline]
    pub fn insert(&mut self, value: T) -> Result<Key<M>, T> {
        if let Some(index) = self.free_head {
            let entry = &mut self.entries[index as usize];
            let (generation, next_free) = match entry {
                Place::Vacant {
                    generation,
                    next_free,
                } => (*generation, *next_free),
                _ => unreachable!("the free list points at a vacant slot"),
            };
            *entry = Place::Occupied { generation, value };
            self.free_head = next_free;
            self.len += 1;
            return Ok(Key::new(index, generation));
        }
        if self.entries.len() == self.capacity {
            return Err(value);
        }
        let index = self.entries.len() as u32;
        // Within the reserved capacity: no reallocation (see the invariant).
        self.entries.push(Place::Occupied {
            generation: 0,
            value,
        });
        self.len += 1;
        Ok(Key::new(index, 0))
    }

    /// The value under `key`, if that exact generation is stored.
    #[inline]
    pub fn get(&self, key: Key<M>) -> Option<&T> {
        match self.entries.get(key.index as usize)? {
            Place::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// The value under `key`, writable.
    #[inline]
    pub fn get_mut(&mut self, key: Key<M>) -> Option<&mut T> {
        match self.entries.get_mut(key.index as usize)? {
            Place::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// Removes and returns the value under `key`; the slot's generation moves on.
    pub fn remove(&mut self, key: Key<M>) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        match entry {
            Place::Occupied { generation, .. } if *generation == key.generation => {}
            _ => return None,
        }
        let Some(generation) = key.generation.checked_add(1) else {
            // The generation would wrap: the slot is retired for good (see the module doc).
            let Place::Occupied { value, .. } = std::mem::replace(entry, Place::Worn) else {
                unreachable!("checked occupied above")
            };
            self.len -= 1;
            self.worn += 1;
            return Some(value);
        };
        let next = Place::Vacant {
            generation,
            next_free: self.free_head,
        };
        let Place::Occupied { value, .. } = std::mem::replace(entry, next) else {
            unreachable!("checked occupied above")
        };
        self.free_head = Some(key.index);
        self.len -= 1;
        Some(value)
    }

    /// Takes `key`'s value out and retires its slot: lookups of `key` find nothing from now on,
    /// but the index is not reused until [`release`](Self::release). `None` if the key is
    /// stale.
    pub fn retire(&mut self, key: Key<M>) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        match entry {
            Place::Occupied { generation, .. } if *generation == key.generation => {}
            _ => return None,
        }
        let retired = Place::Retired {
            generation: key.generation,
        };
        let Place::Occupied { value, .. } = std::mem::replace(entry, retired) else {
            unreachable!("checked occupied above")
        };
        self.len -= 1;
        self.retired += 1;
        Some(value)
    }

    /// [`retire`](Self::retire) if `f` says so, without moving the whole value out: `f` looks
    /// at the value in place and returns `Some` (taking what the caller needs) to retire the
    /// slot, `None` to leave it. `None` also if the key is stale.
    #[inline]
    pub fn retire_if<R>(&mut self, key: Key<M>, f: impl FnOnce(&mut T) -> Option<R>) -> Option<R> {
        let entry = self.entries.get_mut(key.index as usize)?;
        let taken = match entry {
            Place::Occupied { generation, value } if *generation == key.generation => f(value)?,
            _ => return None,
        };
        *entry = Place::Retired {
            generation: key.generation,
        };
        self.len -= 1;
        self.retired += 1;
        Some(taken)
    }

    /// Frees retired slot `key` for reuse (its generation moves on). Nothing if `key` is not
    /// retired under that generation.
    #[inline]
    pub fn release(&mut self, key: Key<M>) {
        let Some(entry) = self.entries.get_mut(key.index as usize) else {
            return;
        };
        if matches!(entry, Place::Retired { generation } if *generation == key.generation) {
            self.retired -= 1;
            let Some(generation) = key.generation.checked_add(1) else {
                // The generation would wrap: the slot is retired for good (module doc).
                *entry = Place::Worn;
                self.worn += 1;
                return;
            };
            *entry = Place::Vacant {
                generation,
                next_free: self.free_head,
            };
            self.free_head = Some(key.index);
        }
    }

    /// Every stored key and value.
    pub fn iter(&self) -> impl Iterator<Item = (Key<M>, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Place::Occupied { generation, value } => {
                    Some((Key::new(i as u32, *generation), value))
                }
                Place::Vacant { .. } | Place::Retired { .. } | Place::Worn => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_find_nothing() {
        let mut slab: Slab<_> = Slab::with_capacity(2);
        let a = slab.insert("a").unwrap();
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b").unwrap();
        assert_eq!(b.index, a.index, "the slot is reused");
        assert_ne!(b.generation, a.generation);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
    }

    #[test]
    fn full_slab_refuses_and_never_moves() {
        let mut slab: Slab<_> = Slab::with_capacity(3);
        let keys: Vec<Key> = (0..3).map(|i| slab.insert(i).unwrap()).collect();
        let addr = slab.get(keys[0]).unwrap() as *const i32;
        assert_eq!(slab.insert(9), Err(9));
        slab.remove(keys[1]);
        let k = slab.insert(7).unwrap();
        assert_eq!(k.index, keys[1].index);
        assert_eq!(slab.get(keys[0]).unwrap() as *const i32, addr);
        assert_eq!(slab.len(), 3);
    }

    #[test]
    fn a_retired_slot_is_reserved_until_released() {
        let mut kept: Slab<_> = Slab::with_capacity(1);
        let k = kept.insert(1).unwrap();
        assert_eq!(kept.retire_if(k, |_| None::<i32>), None);
        assert_eq!(kept.get(k), Some(&1), "retire_if said no: still there");
        assert_eq!(kept.retire_if(k, |v| Some(*v * 2)), Some(2));
        assert_eq!(kept.get(k), None);
        let mut slab: Slab<_> = Slab::with_capacity(1);
        let a = slab.insert("a").unwrap();
        assert_eq!(slab.retire(a), Some("a"));
        assert_eq!((slab.get(a), slab.len()), (None, 0), "gone for lookups");
        assert_eq!(slab.retire_if(a, |v| Some(*v)), None);
        assert!(slab.is_full());
        assert_eq!(slab.insert("b"), Err("b"), "its index is still reserved");
        slab.release(Key::new(a.index, a.generation + 1));
        assert_eq!(slab.insert("b"), Err("b"), "a stale release frees nothing");
        slab.release(a);
        let b = slab.insert("b").unwrap();
        assert_eq!((b.index, b.generation), (a.index, a.generation + 1));
        slab.release(a);
        assert_eq!(
            slab.get(b),
            Some(&"b"),
            "releasing an old key leaves the new value"
        );
    }

    #[test]
    fn keys_pack_round_trip() {
        let k: Key = Key::new(0xAB_CDEF, 0xDEAD_BEEF);
        assert_eq!(Key::unpack(k.pack()), k);
        assert!(k.pack() < 1 << 56);
    }

    #[test]
    fn a_slot_whose_generation_ran_out_is_never_reused() {
        // Two slots, both one use short of the last generation.
        let mut slab: Slab<&str> = Slab::with_capacity(2);
        slab.entries.push(Place::Vacant {
            generation: u32::MAX,
            next_free: Some(1),
        });
        slab.entries.push(Place::Vacant {
            generation: u32::MAX,
            next_free: None,
        });
        slab.free_head = Some(0);
        let a = slab.insert("a").unwrap();
        let b = slab.insert("b").unwrap();
        assert_eq!((a.generation, b.generation), (u32::MAX, u32::MAX));
        // One removed, one retired then released: neither comes back, under any generation.
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.retire(b), Some("b"));
        slab.release(b);
        assert!(slab.is_full(), "both worn");
        assert_eq!(slab.insert("c"), Err("c"));
        assert_eq!(
            slab.get(Key::new(0, 0)),
            None,
            "a wrapped key finds nothing"
        );
        assert_eq!(slab.len(), 0);
    }
}
