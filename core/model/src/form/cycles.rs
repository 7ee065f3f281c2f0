//! Dependency cycles between a form's values: a cycle would make evaluation loop.

use std::collections::HashMap;

use super::{Container, Form};
use crate::expr::Compiled;

/// A node of the dependency graph: a field, a group or a repeat.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Node {
    Field(usize),
    Group(usize),
    Repeat(usize),
}

impl Form {
    /// What the value of `n` needs: its calculate, default and relevance expressions' fields
    /// and repeat counts, and its container's relevance.
    fn deps(&self, n: Node) -> Vec<Node> {
        let mut out = Vec::new();
        let mut add = |c: &Option<Compiled>| {
            if let Some(c) = c {
                out.extend(c.field_deps().iter().map(|&f| Node::Field(f)));
                out.extend(c.repeat_deps().iter().map(|&r| Node::Repeat(r)));
            }
        };
        let parent = match n {
            Node::Field(f) => self.fields.get(f).and_then(|f| {
                add(&f.calculate);
                add(&f.default);
                add(&f.relevant);
                f.parent
            }),
            Node::Group(g) => self.groups.get(g).and_then(|g| {
                add(&g.relevant);
                g.parent
            }),
            Node::Repeat(r) => self.repeats.get(r).and_then(|r| {
                add(&r.relevant);
                r.parent
            }),
        };
        match parent {
            Some(Container::Group(g)) => out.push(Node::Group(g)),
            Some(Container::Repeat(r)) => out.push(Node::Repeat(r)),
            None => {}
        }
        out
    }

    fn node_name(&self, n: Node) -> String {
        match n {
            Node::Field(f) => self.fields.get(f).map(|x| x.name.clone()),
            Node::Group(g) => self.groups.get(g).map(|x| x.name.clone()),
            Node::Repeat(r) => self.repeats.get(r).map(|x| x.name.clone()),
        }
        .unwrap_or_default()
    }

    /// A cycle of "value of A needs value of B" edges, by names, if there is one. Depth-first
    /// and iterative, so a deep hostile form cannot exhaust the stack.
    pub(super) fn find_cycle(&self) -> Option<Vec<String>> {
        let all = (0..self.fields.len())
            .map(Node::Field)
            .chain((0..self.groups.len()).map(Node::Group))
            .chain((0..self.repeats.len()).map(Node::Repeat));
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut state: HashMap<Node, u8> = HashMap::new();
        for start in all {
            if state.get(&start).copied().unwrap_or(0) != 0 {
                continue;
            }
            let mut path: Vec<(Node, Vec<Node>)> = vec![(start, self.deps(start))];
            state.insert(start, 1);
            while let Some((node, pending)) = path.last_mut() {
                let node = *node;
                let Some(next) = pending.pop() else {
                    state.insert(node, 2);
                    path.pop();
                    continue;
                };
                match state.get(&next).copied().unwrap_or(0) {
                    0 => {
                        state.insert(next, 1);
                        path.push((next, self.deps(next)));
                    }
                    1 => {
                        let from = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<String> = path
                            .iter()
                            .skip(from)
                            .map(|(n, _)| self.node_name(*n))
                            .collect();
                        cycle.push(self.node_name(next));
                        return Some(cycle);
                    }
                    _ => {}
                }
            }
        }
        None
    }
}
