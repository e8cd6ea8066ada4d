//! What one filter instance may hold: every linear memory and table
//! together within `memory_mb`, and a bounded number of each.
//!
//! wasmtime's `StoreLimits` caps each memory on its own, so a component
//! with eight memories could take eight times `memory_mb`, and it does not
//! bound tables unless asked. Table elements are counted at
//! [`TABLE_ELEMENT_BYTES`] each against the same budget.

use wasmtime::ResourceLimiter;

/// What a table element is counted as (a function reference and its
/// bookkeeping on a 64-bit host).
pub(crate) const TABLE_ELEMENT_BYTES: usize = 16;

/// Instances, memories and tables a component may create: enough for the
/// components language runtimes build (CPython, StarlingMonkey compose
/// dozens of core instances), far below what would cost real memory.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 128;

/// One instance's budget, and what it has used of it.
#[derive(Debug)]
pub(crate) struct SandboxLimits {
    budget: usize,
    used: usize,
    /// What the growth being attempted added to `used`: wasmtime asks before
    /// it allocates, so a growth that then fails gives it back.
    pending: usize,
}

impl SandboxLimits {
    /// A budget of `bytes` for all memories and tables together.
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            budget: bytes,
            used: 0,
            pending: 0,
        }
    }

    fn grow(&mut self, what: &str, from: usize, to: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.pending = 0;
        // Past its own declared maximum the growth fails anyway (`-1` for
        // the guest): nothing to charge.
        if maximum.is_some_and(|max| to > max) {
            return Ok(false);
        }
        let more = to.saturating_sub(from);
        let after = self.used.saturating_add(more);
        if after > self.budget {
            // An error (not `Ok(false)`) traps the guest at once, instead of
            // handing it a -1 from `memory.grow` to ignore.
            return Err(wasmtime::Error::msg(format!(
                "{what} from {from} to {to} bytes would pass the memory cap: {} of {} MiB in use by all memories and tables",
                self.used >> 20,
                self.budget >> 20
            )));
        }
        self.used = after;
        self.pending = more;
        Ok(true)
    }

    /// A growth that was allowed failed after all: it costs nothing.
    fn grow_failed(&mut self) {
        self.used = self.used.saturating_sub(std::mem::take(&mut self.pending));
    }
}

impl ResourceLimiter for SandboxLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow("growing memory", current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(
            "growing a table",
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
            maximum.map(|m| m.saturating_mul(TABLE_ELEMENT_BYTES)),
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::{Config, Engine, Instance, Module, Store};

    use super::*;

    fn store(engine: &Engine, mib: usize) -> Store<SandboxLimits> {
        let mut store = Store::new(engine, SandboxLimits::new(mib << 20));
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store
    }

    fn engine() -> Engine {
        let mut config = Config::new();
        config.wasm_multi_memory(true);
        Engine::new(&config).unwrap()
    }

    #[test]
    fn growth_past_a_declared_maximum_costs_nothing() {
        let engine = engine();
        let module = Module::new(
            &engine,
            r#"(module (memory 1 2)
                 (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#,
        )
        .unwrap();
        let mut store = store(&engine, 1);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance.get_typed_func::<i32, i32>(&mut store, "grow").unwrap();
        // Refused by the module's own maximum, many times: -1, and no charge.
        for _ in 0..100 {
            assert_eq!(grow.call(&mut store, 8).unwrap(), -1);
        }
        // So a growth within both still works (2 pages of the 1 MiB budget).
        assert_eq!(grow.call(&mut store, 1).unwrap(), 1);
    }

    #[test]
    fn every_memory_counts_against_one_budget() {
        let engine = engine();
        // Two memories of 40 MiB (640 pages of 64 KiB) each: 80 MiB.
        let two = Module::new(&engine, "(module (memory 640) (memory 640))").unwrap();
        let error = Instance::new(&mut store(&engine, 64), &two, &[]).unwrap_err();
        assert!(format!("{error:#}").contains("memory cap"), "{error:#}");
        assert!(Instance::new(&mut store(&engine, 96), &two, &[]).is_ok());
    }

    #[test]
    fn growth_of_memories_and_tables_is_bounded_together() {
        let engine = engine();
        let module = Module::new(
            &engine,
            r#"(module
                 (memory 1) (memory 1)
                 (table 1 funcref)
                 (func (export "grow_memory") (param i32) (result i32)
                   (memory.grow 1 (local.get 0)))
                 (func (export "grow_table") (param i32) (result i32)
                   (table.grow 0 (ref.null func) (local.get 0))))"#,
        )
        .unwrap();
        let mut store = store(&engine, 4);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let grow_memory = instance.get_typed_func::<i32, i32>(&mut store, "grow_memory").unwrap();
        let grow_table = instance.get_typed_func::<i32, i32>(&mut store, "grow_table").unwrap();
        // 2 pages used; 60 more would be 3.9 MiB: fine.
        assert_eq!(grow_memory.call(&mut store, 60).unwrap(), 1);
        // A table of 10 000 elements (160 KiB) is over what is left.
        let error = grow_table.call(&mut store, 10_000).unwrap_err();
        assert!(format!("{error:#}").contains("memory cap"), "{error:#}");
        let mut store2 = super::tests::store(&engine, 4);
        let instance = Instance::new(&mut store2, &module, &[]).unwrap();
        let grow_table = instance.get_typed_func::<i32, i32>(&mut store2, "grow_table").unwrap();
        let grow_memory = instance.get_typed_func::<i32, i32>(&mut store2, "grow_memory").unwrap();
        // A table of 100 000 elements (1.5 MiB) leaves too little for 40 pages.
        assert_eq!(grow_table.call(&mut store2, 100_000).unwrap(), 1);
        assert!(grow_memory.call(&mut store2, 40).is_err());
    }
}
