// A local Ethereum JSON-RPC node for the anchoring tests (`hardhat node`, Hardhat Network): the Makefile copies
// this file next to the pinned hardhat install (.test-chain). Every account and key is Hardhat's public test
// mnemonic ("test test ... junk"); never point anything real at it.
module.exports = {
  networks: {
    hardhat: {
      chainId: Number(process.env.PLATFORMQ_TEST_CHAIN_ID || 31337),
      hardfork: "cancun", // the anchor registry is compiled for Cancun (#pragma evm-version cancun)
    },
  },
};
