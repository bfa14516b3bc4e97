// React Native's AppState, for running the README's React Native example in Node (there is no React Native
// runtime here); the test drives `change` events through it.
const listeners = new Set();
export const AppState = {
  addEventListener(name, fn) {
    listeners.add(fn);
    return { remove: () => listeners.delete(fn) };
  },
  emit(state) {
    for (const fn of listeners) fn(state);
  },
  get listeners() {
    return listeners.size;
  },
};
