// @react-native-community/netinfo's addEventListener, for running the README's example in Node.
const listeners = new Set();
export default {
  addEventListener(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  },
  emit() {
    for (const fn of listeners) fn({ isConnected: true });
  },
  get listeners() {
    return listeners.size;
  },
};
